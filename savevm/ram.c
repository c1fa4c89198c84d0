/* The RAM handler.
 *
 * Source: takes the dirty bitmap a word (64 pages) at a time, sends zero
 * pages as headers only and others as iovecs pointing straight into guest
 * memory, up to STREAM_MAX_PAGES_PER_REC pages a record.  With one
 * connection the migration thread walks; with RAM channels (multifd) every
 * channel's thread walks at once, each claiming the next chunk of the
 * bitmap, so zero checks, headers and copies run in parallel.  A page may
 * change while its bytes are in flight (and with zero-copy, until the
 * kernel's notification): that is safe because the dirty tracker
 * re-protected it before its bit was published, so the change sets the
 * bit again and the page goes again in a later pass or in stop-and-copy,
 * when the guest is stopped until the destination has everything.
 *
 * Destination: checks every header of a record, then moves its payloads
 * into RAM by the receive path (see enum ram_recv_path). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "savevm/multifd.h"
#include "savevm/ram.h"

/* payload bytes per save_iterate call on the main connection: small
 * enough to check for cancel and refresh statistics often, large enough
 * to amortise the call */
#define ITERATE_BUDGET (32u << 20)
/* how long save_iterate waits for the channels' walk before it returns
 * to the migration loop (cancel, max-bandwidth changes) */
#define ITERATE_WAIT_MS 20
/* bitmap words a channel claims at once: 1024 pages, 4 MiB of RAM */
#define WALK_CHUNK_WORDS 16u
#define WORD_BITS DIRTY_BITMAP_WORD_BITS

/* One sender's record in the making: record header then page headers,
 * contiguous (one prefix to send), and the payload iovecs. */
struct ram_batch {
	struct ram_handler *h;
	struct savevm_out *out;
	struct multifd_chan *chan;	/* NULL: the main connection */
	uint32_t count, max;
	int niov;
	union {
		uint8_t bytes[STREAM_RAM_HDR_SIZE + STREAM_MAX_PAGES_PER_REC * 8];
		uint64_t align;
	} hdr;
	struct iovec iov[STREAM_MAX_PAGES_PER_REC + 1];
};

struct ram_handler {
	struct kvm_mem *mem;
	struct dirty_bitmap *dirty;
	struct ram_tracker tracker;
	uint64_t nr_pages;
	enum ram_recv_path recv_path;	/* asked for */
	_Atomic unsigned int recv_used;	/* destination: 1 << path, each taken */
	/* source, main connection */
	uint64_t cursor;		/* next bitmap word of the walk */
	struct ram_batch main;
	/* source, RAM channels */
	struct ram_batch *chan_batch;	/* one per channel */
	unsigned int nr_chan_batch;
	_Atomic uint64_t walk_next;	/* next bitmap word to claim */
	bool walk_running;
	_Atomic uint64_t normal, duplicate, holes, headers, received, bytes;
	uint8_t *written;	/* destination: page ever received with data */
	int sync_error;		/* from an exact pending query */
};

/* The zero check reads a whole page only when it is zero (a written page
 * differs within its first bytes), so it is as fast as memory bandwidth on
 * zero pages: 256 bytes an iteration, ORed in vector registers. */
typedef uint64_t v4u64 __attribute__((vector_size(32)));

__attribute__((target("avx2"))) static bool page_is_zero_avx2(const uint8_t *p)
{
	const v4u64 *v = (const v4u64 *)p;

	for (unsigned int i = 0; i < KVM_PAGE_SIZE / 32; i += 8) {
		v4u64 a = (v[i] | v[i + 1]) | (v[i + 2] | v[i + 3]);
		v4u64 b = (v[i + 4] | v[i + 5]) | (v[i + 6] | v[i + 7]);
		v4u64 c = a | b;

		if (c[0] | c[1] | c[2] | c[3])
			return false;
	}
	return true;
}

static bool page_is_zero_generic(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;

	for (unsigned int i = 0; i < KVM_PAGE_SIZE / 8; i += 8) {
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
			return false;
	}
	return true;
}

static bool page_is_zero(const uint8_t *p)
{
	static int avx2 = -1;

	if (avx2 < 0)
		avx2 = __builtin_cpu_supports("avx2");
	return avx2 ? page_is_zero_avx2(p) : page_is_zero_generic(p);
}

/* ------------------------------------------------------------ source */

static void batch_init(struct ram_batch *b, struct ram_handler *h, struct savevm_out *out,
		       struct multifd_chan *chan)
{
	b->h = h;
	b->out = out;
	b->chan = chan;
	b->count = 0;
	b->niov = 1;
}

/* Under max-bandwidth, records shrink to about a millisecond of the
 * limit, so that no send is a burst. */
static void batch_size(struct ram_batch *b)
{
	size_t chunk = savevm_rate_chunk(b->out->rate) / KVM_PAGE_SIZE;

	b->max = chunk < 1 ? 1 : chunk < STREAM_MAX_PAGES_PER_REC ? (uint32_t)chunk : STREAM_MAX_PAGES_PER_REC;
}

static int flush(struct ram_batch *b)
{
	if (!b->count)
		return 0;
	size_t prefix = STREAM_RAM_HDR_SIZE + b->count * sizeof(uint64_t);
	int npayload = b->niov - 1, r;

	stream_encode_ram_hdr(b->hdr.bytes, 1, b->count);
	b->iov[0] = (struct iovec){ b->hdr.bytes, prefix };
	r = b->chan ? multifd_chan_send(b->chan, b->iov, b->niov, prefix, b->count)
		    : savevm_out_send_pages(b->out, &b->out->path, b->iov, b->niov, prefix);
	atomic_fetch_add(&b->h->headers, b->count);
	atomic_fetch_add(&b->h->bytes, prefix + (uint64_t)npayload * KVM_PAGE_SIZE);
	b->count = 0;
	b->niov = 1;
	return r;
}

static int add_page(struct ram_batch *b, uint64_t pg)
{
	struct ram_handler *h = b->h;
	uint8_t *p = kvm_mem_base(h->mem) + pg * KVM_PAGE_SIZE;
	uint64_t gpa = kvm_mem_offset_to_gpa(h->mem, pg * KVM_PAGE_SIZE);
	bool zero = page_is_zero(p);
	uint64_t ph = stream_page_hdr(gpa, zero);

	memcpy(b->hdr.bytes + STREAM_RAM_HDR_SIZE + b->count++ * sizeof(ph), &ph, sizeof(ph));
	if (zero) {
		atomic_fetch_add_explicit(&h->duplicate, 1, memory_order_relaxed);
	} else {
		b->iov[b->niov++] = (struct iovec){ p, KVM_PAGE_SIZE };
		atomic_fetch_add_explicit(&h->normal, 1, memory_order_relaxed);
	}
	return b->count >= b->max ? flush(b) : 0;
}

/* Send the pages whose bits were taken from bitmap word w. */
static int send_word(struct ram_batch *b, uint64_t w, unsigned long bits, uint64_t *sent)
{
	int r = 0;

	while (bits && !r) {
		r = add_page(b, w * WORD_BITS + (uint64_t)__builtin_ctzl(bits));
		bits &= bits - 1;
		*sent += KVM_PAGE_SIZE;
	}
	return r;
}

/* Main connection: send dirty pages until the budget is spent (0) or the
 * walk reaches the end of the bitmap (1). */
static int send_dirty(struct ram_handler *h, struct savevm_out *out, uint64_t budget)
{
	uint64_t nwords = dirty_bitmap_nwords(h->dirty), sent = 0;
	struct ram_batch *b = &h->main;
	int r = 0;

	batch_init(b, h, out, NULL);
	batch_size(b);
	while (!r && sent < budget) {
		if (h->cursor >= nwords) {
			h->cursor = 0;
			r = flush(b);
			return r ? r : 1;
		}
		uint64_t w = h->cursor++;

		r = send_word(b, w, dirty_bitmap_take_word(h->dirty, w), &sent);
	}
	return r ? r : flush(b);
}

/* A channel's share of a walk: chunks of the bitmap claimed one after the
 * other until none is left (multifd_walk_fn). */
static int walk_channel(void *opaque, struct multifd_chan *c)
{
	struct ram_handler *h = opaque;
	struct ram_batch *b = &h->chan_batch[multifd_chan_index(c)];
	uint64_t nwords = dirty_bitmap_nwords(h->dirty), sent = 0;
	int r = 0;

	b->chan = c;
	for (;;) {
		uint64_t w = atomic_fetch_add(&h->walk_next, WALK_CHUNK_WORDS);
		uint64_t end = w + WALK_CHUNK_WORDS < nwords ? w + WALK_CHUNK_WORDS : nwords;

		if (w >= nwords)
			break;
		if (b->out->cancel && *b->out->cancel)
			return -ECANCELED;
		batch_size(b);
		for (; w < end && !r; w++)
			r = send_word(b, w, dirty_bitmap_take_word(h->dirty, w), &sent);
		if (r)
			return r;
	}
	return flush(b);
}

static int alloc_chan_batches(struct ram_handler *h, struct savevm_out *out)
{
	unsigned int nr = multifd_send_nr(out->mf);

	if (h->nr_chan_batch != nr) {
		free(h->chan_batch);
		h->chan_batch = calloc(nr, sizeof(*h->chan_batch));
		h->nr_chan_batch = h->chan_batch ? nr : 0;
		if (!h->chan_batch)
			return -ENOMEM;
	}
	for (unsigned int i = 0; i < nr; i++)
		batch_init(&h->chan_batch[i], h, out, NULL);
	return 0;
}

/* RAM channels: start a walk on every channel (unless one runs), then
 * wait a little for it: 1 = the walk is over, 0 = call again. */
static int iterate_channels(struct ram_handler *h, struct savevm_out *out)
{
	int r;

	if (!h->walk_running) {
		r = alloc_chan_batches(h, out);
		if (r)
			return r;
		atomic_store(&h->walk_next, 0);
		r = multifd_send_walk(out->mf, walk_channel, h);
		if (r)
			return r;
		h->walk_running = true;
	}
	r = multifd_send_wait(out->mf, ITERATE_WAIT_MS);
	if (r == 1)
		h->walk_running = false;
	return r;
}

static int ram_save_setup(void *opaque, struct savevm_out *out, char *err, size_t errlen)
{
	struct ram_handler *h = opaque;
	int r = h->tracker.start ? h->tracker.start(h->tracker.opaque, err, errlen) : 0;

	if (r)
		return r;
	/* Everything the guest ever touched starts dirty; after logging
	 * started, so a page first written from now on is logged. */
	kvm_mem_mark_populated(h->mem);
	atomic_store(&h->holes, h->nr_pages - dirty_bitmap_count(h->dirty));
	h->sync_error = 0;
	h->cursor = 0;
	h->walk_running = false;
	(void)out;
	return 0;
}

static int ram_save_iterate(void *opaque, struct savevm_out *out)
{
	struct ram_handler *h = opaque;

	if (h->sync_error)
		return h->sync_error;
	return out->mf ? iterate_channels(h, out) : send_dirty(h, out, ITERATE_BUDGET);
}

static int ram_save_complete(void *opaque, struct savevm_out *out)
{
	struct ram_handler *h = opaque;
	int r = 0;

	if (out->mf) {
		/* a walk still running ends first: one walk per epoch */
		while (h->walk_running && (r = iterate_channels(h, out)) == 0)
			;
		if (r < 0)
			return r;
		while ((r = iterate_channels(h, out)) == 0)
			;
		return r < 0 ? r : 0;
	}
	/* switchover may come mid-walk: one whole walk from the start
	 * covers what the interrupted one had left */
	h->cursor = 0;
	while ((r = send_dirty(h, out, UINT64_MAX)) == 0)
		;
	return r < 0 ? r : 0;
}

static void ram_save_cleanup(void *opaque)
{
	struct ram_handler *h = opaque;

	free(h->chan_batch);
	h->chan_batch = NULL;
	h->nr_chan_batch = 0;
	h->walk_running = false;
	if (h->tracker.stop)
		h->tracker.stop(h->tracker.opaque);
}

static uint64_t ram_pending(void *opaque, bool exact)
{
	struct ram_handler *h = opaque;

	if (exact && h->tracker.sync) {
		int r = h->tracker.sync(h->tracker.opaque, false);

		/* a figure cannot carry an error: the next iterate fails with it */
		if (r && !h->sync_error)
			h->sync_error = r;
	}
	return dirty_bitmap_count(h->dirty) * KVM_PAGE_SIZE;
}

static int ram_sync(void *opaque, bool final)
{
	struct ram_handler *h = opaque;

	return h->tracker.sync ? h->tracker.sync(h->tracker.opaque, final) : 0;
}

/* ------------------------------------------------------- destination */

/* A page the stream says is zero: fresh memory already is; a page written
 * earlier in this migration goes back to reading zero (kvm_mem_zero). */
static int load_zero_page(struct ram_handler *h, uint64_t pg, char *err, size_t errlen)
{
	if (!h->written[pg])
		return 0;
	h->written[pg] = 0;
	int r = kvm_mem_zero(h->mem, pg * KVM_PAGE_SIZE, KVM_PAGE_SIZE);

	if (r)
		snprintf(err, errlen, "cannot clear guest page 0x%llx: %s",
			 (unsigned long long)(pg * KVM_PAGE_SIZE), strerror(-r));
	return r;
}

static int truncated(int r, char *err, size_t errlen)
{
	snprintf(err, errlen, "stream truncated while reading page data: %s", strerror(-r));
	return r;
}

/* SPLICE and MAPPING: a run of pages from the socket into place. */
static int load_run(struct ram_handler *h, enum ram_recv_path path, struct savevm_in *in, uint64_t first,
		    uint64_t n, char *err, size_t errlen)
{
	struct iovec iov = { kvm_mem_base(h->mem) + first * KVM_PAGE_SIZE, n * KVM_PAGE_SIZE };
	int r = !n ? 0
		: path == RAM_RECV_MAPPING
			? savevm_in_readv(in, &iov, 1)
			: savevm_in_splice(in, kvm_mem_fd(h->mem), first * KVM_PAGE_SIZE, n * KVM_PAGE_SIZE);

	return r ? truncated(r, err, errlen) : 0;
}

static int load_in_runs(struct ram_handler *h, enum ram_recv_path path, struct savevm_in *in,
			const uint64_t *hdrs, const uint64_t *pgs, uint32_t count, char *err, size_t errlen)
{
	uint64_t run_first = 0, run_len = 0;
	int r = 0;

	/* payloads come in header order: move each run of pages that are
	 * also contiguous in RAM in one go */
	for (uint32_t i = 0; i < count && !r; i++) {
		if (hdrs[i] & STREAM_PAGE_ZERO) {
			/* header order: a page of the pending run that the
			 * record then names zero gets its data first */
			if (pgs[i] >= run_first && pgs[i] < run_first + run_len) {
				r = load_run(h, path, in, run_first, run_len, err, errlen);
				run_len = 0;
			}
			if (!r)
				r = load_zero_page(h, pgs[i], err, errlen);
			continue;
		}
		h->written[pgs[i]] = 1;
		if (run_len && pgs[i] == run_first + run_len) {
			run_len++;
			continue;
		}
		r = load_run(h, path, in, run_first, run_len, err, errlen);
		run_first = pgs[i];
		run_len = 1;
	}
	return r ? r : load_run(h, path, in, run_first, run_len, err, errlen);
}

/* WRITE: every payload of the record into this reader's buffer with one
 * receive, then into RAM by kvm_mem_write, run by run. */
static int load_written(struct ram_handler *h, struct savevm_in *in, const uint64_t *hdrs,
			const uint64_t *pgs, uint32_t count, char *err, size_t errlen)
{
	struct kvm_mem_run runs[STREAM_MAX_PAGES_PER_REC];
	uint32_t ndata = 0, nruns = 0;
	size_t used = 0, pending = 0;
	int r = 0;

	for (uint32_t i = 0; i < count; i++)
		ndata += !(hdrs[i] & STREAM_PAGE_ZERO);
	uint8_t *buf = ndata ? savevm_in_scratch(in, (size_t)ndata * KVM_PAGE_SIZE) : NULL;

	if (ndata && !buf) {
		snprintf(err, errlen, "out of memory for a receive buffer");
		return -ENOMEM;
	}
	struct iovec iov = { buf, (size_t)ndata * KVM_PAGE_SIZE };

	if (ndata && (r = savevm_in_readv(in, &iov, 1)))
		return truncated(r, err, errlen);
	for (uint32_t i = 0; i < count && !r; i++) {
		uint64_t off = pgs[i] * KVM_PAGE_SIZE;

		if (hdrs[i] & STREAM_PAGE_ZERO) {
			/* header order: what came before it lands first */
			if (h->written[pgs[i]] && nruns) {
				r = kvm_mem_write(h->mem, buf + used, runs, nruns);
				used += pending;
				pending = nruns = 0;
			}
			if (!r)
				r = load_zero_page(h, pgs[i], err, errlen);
			continue;
		}
		h->written[pgs[i]] = 1;
		pending += KVM_PAGE_SIZE;
		if (nruns && runs[nruns - 1].offset + runs[nruns - 1].len == off)
			runs[nruns - 1].len += KVM_PAGE_SIZE;
		else
			runs[nruns++] = (struct kvm_mem_run){ off, KVM_PAGE_SIZE };
	}
	if (!r && nruns)
		r = kvm_mem_write(h->mem, buf + used, runs, nruns);
	if (r && !err[0])
		snprintf(err, errlen, "cannot write received pages into guest RAM: %s", strerror(-r));
	return r;
}

/* AUTO's choice (see ram.h): splice, which neither copies twice nor
 * zeroes a page it fills whole, even for RAM channels that queue on the
 * memfd's inode lock (measured: docs/transport.md); a preallocated RAM is
 * mapped already, so reading into it costs no fault.  A transport that
 * cannot splice (ring_channel_caps: TLS) reads into a buffer and writes
 * the memfd: the mapping's page faults cost more than the copy (TLS,
 * 512 MiB on loopback: 410-532 MB/s written against 215-245 MB/s read
 * into the mapping, bench/ram_path --tls). */
static enum ram_recv_path recv_path_for(const struct ram_handler *h, const struct savevm_in *in)
{
	bool can_splice = !in->ch || (ring_channel_caps(in->ch) & RING_CAP_SPLICE);

	if (h->recv_path == RAM_RECV_SPLICE && !can_splice)
		return RAM_RECV_WRITE;
	if (h->recv_path != RAM_RECV_AUTO)
		return h->recv_path;
	if (kvm_mem_prealloc(h->mem))
		return RAM_RECV_MAPPING;
	return can_splice ? RAM_RECV_SPLICE : RAM_RECV_WRITE;
}

static int ram_load(void *opaque, struct savevm_in *in, const uint64_t *hdrs, uint32_t count,
		    char *err, size_t errlen)
{
	struct ram_handler *h = opaque;
	uint64_t pgs[STREAM_MAX_PAGES_PER_REC];

	/* every address checked before any byte is written */
	for (uint32_t i = 0; i < count; i++) {
		uint64_t gpa = hdrs[i] & ~STREAM_PAGE_FLAGS_MASK, off;

		if (kvm_mem_gpa_to_offset(h->mem, gpa, &off)) {
			snprintf(err, errlen, "page at guest address 0x%llx is outside guest RAM",
				 (unsigned long long)gpa);
			return -EPROTO;
		}
		pgs[i] = off / KVM_PAGE_SIZE;
	}
	atomic_fetch_add(&h->received, count);
	enum ram_recv_path path = recv_path_for(h, in);

	if (!(atomic_load_explicit(&h->recv_used, memory_order_relaxed) & (1u << path)))
		atomic_fetch_or(&h->recv_used, 1u << path);
	return path == RAM_RECV_WRITE ? load_written(h, in, hdrs, pgs, count, err, errlen)
				      : load_in_runs(h, path, in, hdrs, pgs, count, err, errlen);
}

/* A new incoming stream: no page has been received yet. */
static void ram_load_setup(void *opaque)
{
	struct ram_handler *h = opaque;

	memset(h->written, 0, h->nr_pages);
	atomic_store(&h->received, 0);
}

static const struct savevm_ops ram_ops = {
	.save_setup = ram_save_setup,
	.save_iterate = ram_save_iterate,
	.save_complete = ram_save_complete,
	.save_cleanup = ram_save_cleanup,
	.pending = ram_pending,
	.sync = ram_sync,
	.load_setup = ram_load_setup,
	.load_ram = ram_load,
};

/* ------------------------------------------------------------ set-up */

static const char *recv_path_name(enum ram_recv_path p)
{
	static const char *const names[] = { "auto", "write", "splice", "mapping" };

	return p <= RAM_RECV_MAPPING ? names[p] : "?";
}

/* KMIG_RECV_PATH=write|splice|mapping forces a receive path, for
 * measuring them against each other (bench/ram_path.c); unset or
 * anything else: AUTO. */
static enum ram_recv_path recv_path_from_env(void)
{
	const char *s = getenv("KMIG_RECV_PATH");

	if (s && !strcmp(s, "splice"))
		return RAM_RECV_SPLICE;
	if (s && !strcmp(s, "mapping"))
		return RAM_RECV_MAPPING;
	if (s && !strcmp(s, "write"))
		return RAM_RECV_WRITE;
	return RAM_RECV_AUTO;
}

int ram_handler_register(struct savevm_registry *reg, struct kvm_mem *mem, const struct ram_tracker *tracker,
			 struct ram_handler **out)
{
	struct ram_handler *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->mem = mem;
	h->dirty = kvm_mem_dirty(mem);
	if (tracker)
		h->tracker = *tracker;
	h->nr_pages = kvm_mem_nr_pages(mem);
	h->recv_path = recv_path_from_env();
	h->written = calloc(h->nr_pages, 1);
	if (!h->written) {
		free(h);
		return -ENOMEM;
	}
	int r = savevm_register(reg, "ram", 0, 1, true, &ram_ops, h);

	if (r) {
		ram_handler_free(h);
		return r;
	}
	*out = h;
	return 0;
}

void ram_handler_free(struct ram_handler *h)
{
	if (h) {
		free(h->chan_batch);
		free(h->written);
		free(h);
	}
}

void ram_handler_recv_paths(const struct ram_handler *h, char *buf, size_t len)
{
	unsigned int used = atomic_load(&h->recv_used);
	size_t n = 0;

	buf[0] = 0;
	for (int p = RAM_RECV_WRITE; p <= RAM_RECV_MAPPING && n < len; p++)
		if (used & (1u << p))
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? "+" : "", recv_path_name(p));
}

void ram_handler_stats(struct ram_handler *h, struct ram_stats *st)
{
	st->normal = atomic_load(&h->normal);
	st->duplicate = atomic_load(&h->duplicate);
	st->holes = atomic_load(&h->holes);
	st->headers = atomic_load(&h->headers);
	st->received = atomic_load(&h->received);
	st->bytes = atomic_load(&h->bytes);
}

void ram_handler_reset_stats(struct ram_handler *h)
{
	atomic_store(&h->normal, 0);
	atomic_store(&h->duplicate, 0);
	atomic_store(&h->holes, 0);
	atomic_store(&h->headers, 0);
	atomic_store(&h->received, 0);
	atomic_store(&h->bytes, 0);
}

/* ---------------------------------------------- the VM's dirty tracker */

static int vm_track_start(void *vm, char *err, size_t errlen)
{
	return kvm_dirty_start(vm, err, errlen);
}

static void vm_track_stop(void *vm)
{
	kvm_dirty_stop(vm);
}

static int vm_track_sync(void *vm, bool final)
{
	return kvm_dirty_sync(vm, final);
}

void ram_tracker_for_vm(struct ram_tracker *t, struct kvm_vm *vm)
{
	*t = (struct ram_tracker){ .start = vm_track_start, .stop = vm_track_stop, .sync = vm_track_sync,
				   .opaque = vm };
}
