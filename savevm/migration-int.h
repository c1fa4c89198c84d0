/* Private to the migration engine (migration.c, migrate-source.c,
 * migrate-incoming.c): its state and what its files share. */
#ifndef KMIG_SAVEVM_MIGRATION_INT_H
#define KMIG_SAVEVM_MIGRATION_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "ring/ring.h"
#include "savevm/migration.h"
#include "savevm/multifd.h"
#include "savevm/ram.h"

struct migration_object;

/* The TLS of one migration: the credentials it holds a reference to, and
 * the peer description every connection's handshake uses. */
struct mig_tls {
	bool on;
	struct ring_tls_peer peer;
	char hostname[256];
	char identity[1024];
	const char *identities[1];
};

struct migration {
	struct migration_env env;
	/* everything below; never held across a call to the host */
	pthread_mutex_t lock;
	struct migration_params params;
	struct migration_object *objects;	/* objects.c */
	/* from here on, per migration: zeroed as the next one starts */
	enum migration_status status;
	bool incoming;
	bool thread_running;
	pthread_t thread;
	atomic_bool cancel;
	struct ring_channel *ch;	/* for abort from cancel/quit */
	struct multifd_send *mf_send;	/* RAM channels, same purpose */
	struct multifd_recv *mf_recv;
	/* what the RAM path used (x-kmig): channels, copy or zero-copy, and
	 * zero-copy notifications of which the kernel copied anyway */
	unsigned int channels;
	enum savevm_send_mode send_mode;
	uint64_t zc_sends, zc_copied;
	uint64_t multifd_bytes;		/* final, once the channels closed */
	/* expected-downtime when the switchover was decided */
	bool switchover_decided;
	uint64_t switchover_expected_ms;
	/* passes run because the rest still shrank fast (switchover_decide) */
	uint64_t shrink_passes;
	/* the destination's listener, open from --incoming until its
	 * incoming migration ends (a later source is then refused), and the
	 * address it listens on */
	struct ring_listener *listener;
	struct ring_uri listen_addr;
	char uri[256];

	uint64_t start_ns, setup_ns, end_ns;
	uint64_t downtime_start_ns;
	uint64_t downtime_ms, expected_downtime_ms;
	uint64_t precopy_bytes, downtime_bytes;
	_Atomic uint64_t sent;		/* bytes of the stream so far (live) */
	uint64_t dirty_sync_count, passes;
	uint64_t bandwidth;		/* bytes/s measured over the last pass */
	uint64_t pages_per_second, dirty_pages_rate;
	double mbps;
	char error[512];
	bool paused;			/* the switchover paused the guest */
	bool resume_on_fail;		/* the guest ran before switchover */
	struct migration_phases phases;
	struct migration_stall stall;
	uint64_t stall_since_ns;	/* when remaining last fell */
	bool stall_valid;		/* at least one pass measured */
	/* dirty-limit capability: passes in a row whose dirtying outran
	 * half of what they sent; the limit engaged */
	unsigned int dirty_high_passes;
	bool dirty_limit_engaged;
	struct mig_tls tls;		/* released when the migration ends */
	const char *tls_mode;		/* the main connection's ring_tls_mode(), or NULL */
	/* the end of the stream (docs/stream-format.md): source, EOF sent;
	 * destination, loaded but no decision came (the guest waits,
	 * stopped, for cont or quit) */
	bool eof_sent;
	bool unresolved;
};

/* Status and its event (never with g->lock held). */
void mig_set_status(struct migration *g, enum migration_status s);
/* The first error of a migration is the one reported. */
void __attribute__((format(printf, 2, 3))) mig_set_error(struct migration *g, const char *fmt, ...);
/* The RAM entry's counters; zero without one. */
void mig_ram_stats(struct migration *g, struct ram_stats *rs);
/* Abort every connection of the migration (cancel, abort); g->lock held. */
void mig_abort_channels_locked(struct migration *g);
/* A failed migration's end: its time, and its connection unpublished
 * (cancel no longer reaches it) and closed. */
void mig_end_connection(struct migration *g, struct ring_channel *ch);
/* The thread of the last migration, and a listener it left. */
void mig_join(struct migration *g);
/* objects.c: the TLS of a migration from its parameters (QEMU's words
 * when an id names nothing usable); g->lock held.  uri_host: the name the
 * server's certificate must carry when tls-hostname is not set. */
int mig_tls_resolve_locked(struct migration *g, bool server, const char *uri_host, struct mig_tls *t, char *err,
			   size_t errlen);
void mig_tls_release(struct mig_tls *t);
void mig_objects_free(struct migration *g);
/* migrate-source.c: the source's thread, for migration_start(). */
int mig_source_start(struct migration *g, const char *uri, char *err, size_t errlen);

#endif
