/* savevm/multifd.h — RAM over several connections (QEMU's multifd).
 *
 * The main connection keeps the stream's order: header, sections, a
 * CHANNELS record, device state, EOF.  RAM records go on nr further
 * connections, each opened with a hello that binds it to the main stream
 * (index, nr, cookie).  The order that matters between channels is that of
 * a page sent twice: both copies are in different precopy passes, and
 * every channel carries an epoch marker (PASS_END) between passes; the
 * destination does not apply a page of epoch e+1 on any channel before
 * every channel has finished epoch e.  Within an epoch a page is sent at
 * most once (the channels' walkers claim disjoint parts of the dirty
 * bitmap and clear each bit they take), so channels never race on one
 * page.
 */
#ifndef KMIG_SAVEVM_MULTIFD_H
#define KMIG_SAVEVM_MULTIFD_H

#include <stdint.h>
#include <sys/uio.h>

#include "ring/ring.h"
#include "savevm/savevm.h"

struct multifd_send;
struct multifd_chan;

/* Connect nr channels to uri (each in TLS when tls is not NULL, as the
 * main connection) and start a sender thread on each.  Bytes are counted
 * in out (and paced by out->rate). */
int multifd_send_start(struct savevm_out *out, const struct ring_uri *uri, unsigned int nr,
		       uint64_t cookie, enum savevm_send_mode mode, const struct ring_tls_peer *tls,
		       struct multifd_send **mfp, char *err, size_t errlen);
unsigned int multifd_send_nr(const struct multifd_send *mf);
/* Every wait below also watches the main connection: the destination
 * writes on it before the end of the stream only to refuse, so anything
 * readable there fails the channels (-EPIPE) and the caller reads why. */

/* One precopy walk, run by every channel's thread at once: walk(opaque, c)
 * claims pages no other channel takes in this walk and sends them with
 * multifd_chan_send, until none is left; then the channel ends the epoch.
 * Returns once every channel finished the previous job and took this one
 * (or a channel failed). */
typedef int (*multifd_walk_fn)(void *opaque, struct multifd_chan *c);
int multifd_send_walk(struct multifd_send *mf, multifd_walk_fn walk, void *opaque);
/* Wait up to ms (< 0: no limit) for the current job: 1 done on every
 * channel, 0 not yet, -errno once a channel failed. */
int multifd_send_wait(struct multifd_send *mf, int ms);
/* Wait until every channel finished the current job: what a pass sent
 * must be on the sockets before it is counted (and not hide in the
 * downtime). */
int multifd_send_drain(struct multifd_send *mf);
/* From a walk: one RAM record (iov[0..]: prefix bytes of record and page
 * headers, then the page payloads) on channel c; npages page headers. */
int multifd_chan_send(struct multifd_chan *c, const struct iovec *iov, int iovcnt, size_t prefix,
		      uint32_t npages);
unsigned int multifd_chan_index(const struct multifd_chan *c);
/* EOF on every channel (after the current job), wait until all is sent,
 * join the threads. */
int multifd_send_finish(struct multifd_send *mf);
/* Make every channel fail promptly (cancel); thread-safe. */
void multifd_send_abort(struct multifd_send *mf);
void multifd_send_free(struct multifd_send *mf);
/* Bytes the RAM channels sent so far (any thread). */
uint64_t multifd_send_bytes(struct multifd_send *mf);
/* What the channels chose (copy or zero-copy), and zero-copy notices. */
enum savevm_send_mode multifd_send_mode(struct multifd_send *mf);
void multifd_send_zc_stats(struct multifd_send *mf, uint64_t *sends, uint64_t *copied);

struct multifd_recv;
/* Reads the rest of one RAM record (type word already read) from in and
 * applies it; *pages = page headers it carried. */
typedef int (*multifd_ram_fn)(void *opaque, struct savevm_in *in, uint64_t *pages, char *err,
			      size_t errlen);

/* Accept the nr channels the CHANNELS record announced (each must say hello
 * with the right cookie within a timeout) and start a receiver thread on
 * each.  A channel that fails stops the reads of main (the main
 * connection): its reader would otherwise wait for a source that itself
 * waits for the failed channel. */
int multifd_recv_start(struct ring_listener *l, const struct stream_channels *sc, struct ring_channel *main,
		       const struct ring_tls_peer *tls, multifd_ram_fn fn, void *opaque, struct multifd_recv **mrp,
		       char *err, size_t errlen);
/* Wait for every channel's EOF; the first error wins.  *pages = sum. */
int multifd_recv_finish(struct multifd_recv *mr, uint64_t *pages, char *err, size_t errlen);
void multifd_recv_abort(struct multifd_recv *mr);
/* One RAM channel's whole connection, from len bytes at buf, on this
 * thread: its hello (channel 0 of 1, with cookie), then its records up to
 * its EOF, each RAM record through fn.  The fuzzer's way into a channel. */
int multifd_recv_run_mem(const uint8_t *buf, size_t len, uint64_t cookie, multifd_ram_fn fn, void *opaque,
			 uint64_t *pages, char *err, size_t errlen);
void multifd_recv_free(struct multifd_recv *mr);

#endif
