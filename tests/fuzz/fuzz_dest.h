/* tests/fuzz/fuzz_dest.h — a destination for the stream fuzzers: the
 * registry a real destination has (the RAM entry on guest RAM of
 * kvm/mem.h, every device of devices_register by name, two blob devices),
 * without KVM, plus the checks a fuzzer needs:
 *
 *  - guest RAM sits between guard pages (kvm/mem.c), and its memfd must
 *    keep its size: a write past RAM faults or is caught after the run;
 *  - a device state is checked by kvm/'s real kvm_state_check against a
 *    machine with 2 vCPUs and a few MSRs, and "loaded" by keeping a copy;
 *  - after a stream the loader accepted, fuzz_dest_verify() decodes the
 *    same bytes on its own and demands that RAM holds exactly what the
 *    stream said (every page, zero or data, last write wins, nothing
 *    else populated) and that each device got exactly its bytes.
 *
 * A failed check prints what it saw and aborts: the fuzzer's crash. */
#ifndef KMIG_TESTS_FUZZ_DEST_H
#define KMIG_TESTS_FUZZ_DEST_H

#include <stddef.h>
#include <stdint.h>

#include "savevm/load.h"

#define FUZZ_RAM_BYTES (16ull << 20)
#define FUZZ_NR_VCPUS 2u
#define FUZZ_CHANNEL_COOKIE 0x6b6d69672d66757aull

struct fuzz_dest;

#define FUZZ_CHECK(cond, ...)                                                          \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "fuzz check failed: %s (%s:%d): ", #cond, __FILE__, \
				__LINE__);                                             \
			fprintf(stderr, __VA_ARGS__);                                  \
			fputc('\n', stderr);                                           \
			abort();                                                       \
		}                                                                      \
	} while (0)

/* A fresh destination; recv_path is "write", "splice" or "mapping". */
struct fuzz_dest *fuzz_dest_new(const char *recv_path);
void fuzz_dest_free(struct fuzz_dest *d);
/* The fuzzers': one destination per receive path, kept between runs and
 * made fresh again (RAM punched to holes, nothing held) on each call. */
struct fuzz_dest *fuzz_dest_shared(const char *recv_path);
/* What savevm_load_stream needs (open_channels NULL: RAM on one connection). */
const struct savevm_load_env *fuzz_dest_env(struct fuzz_dest *d);
/* RAM records of a RAM channel, for multifd_recv_run_mem. */
int fuzz_dest_ram_record(void *opaque, struct savevm_in *in, uint64_t *pages, char *err, size_t errlen);
/* After any run: RAM's file kept its size. */
void fuzz_dest_check_bounds(struct fuzz_dest *d);
/* After a run that returned 0 over buf: RAM and devices hold what the
 * bytes said.  channel: buf is a RAM channel's connection, not a stream. */
void fuzz_dest_verify(struct fuzz_dest *d, const uint8_t *buf, size_t len, int channel);

/* The recv path a fuzz input of len bytes is loaded with: each input is
 * tried on one of the three, and the fuzzer mutates lengths too. */
const char *fuzz_recv_path_for(size_t len);

#endif
