/* The blob device: an iterable device of configurable size standing in
 * for a VFIO device with gigabytes of state.
 *
 *   --device blob,id=NAME,size=SIZE[,dirty-rate=BYTES/S][,stop-copy=SIZE]
 *
 * It holds real bytes: size/64 KiB chunks, each with a sequence number, and
 * content derived from (id, chunk, seq), so that a chunk's bytes prove
 * which version they are.  While the guest runs, a thread rewrites chunks
 * at dirty-rate (bumping their seq and marking them dirty).  Precopy sends
 * dirty chunks as PART records; stop-and-copy sends the rest, then the
 * stop-copy region (state that only exists once the device is stopped,
 * like a VFIO device's final state), then a manifest: the hash of every
 * chunk's seq.  The destination checks each chunk's bytes against its seq
 * on arrival (a torn or corrupted chunk), and the manifest at the end (a
 * lost update: a chunk whose last version never arrived).
 *
 * PART payload: u32 kind, u32 index, u64 seq, then the data (or, for the
 * manifest, u64 nchunks, u64 seq hash, u64 stop-copy size, u64 epoch).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvm/bitmap.h"
#include "savevm/blob.h"

/* A chunk is 64 KiB; the fuzzers build this file with 4 KiB chunks
 * (-DKMIG_BLOB_CHUNK=4096) so that whole streams stay small. */
#ifdef KMIG_BLOB_CHUNK
#define CHUNK ((uint32_t)(KMIG_BLOB_CHUNK))
#else
#define CHUNK (64u << 10)
#endif
#define PART_HDR 16u
#define ITERATE_BUDGET (8u << 20)
#define MUTATE_PERIOD_NS 10000000L

enum part_kind { PART_CHUNK = 1, PART_STOPCOPY = 2, PART_MANIFEST = 3 };

struct blob {
	struct blob_config cfg;
	char name[STREAM_MAX_NAME + 1];
	struct kvm_vm *vm;
	uint64_t nchunks, nstop;
	uint8_t *data;			/* nchunks * CHUNK */
	uint64_t *seq;
	struct dirty_bitmap dirty;
	uint64_t cursor;
	uint8_t buf[PART_HDR + CHUNK];	/* one chunk being sent */

	pthread_mutex_t lock;		/* data, seq, frozen, epoch, rate */
	bool frozen;			/* stop-and-copy: no more changes */
	uint64_t epoch;			/* total rewrites; seeds the stop-copy region */
	uint64_t rate;
	bool stop_copy_sent;

	pthread_t mutator;
	bool mutator_running, quit;

	/* destination */
	uint8_t *arrived;		/* chunks received at least once */
	uint64_t nr_arrived;
	uint8_t *stop_seen;
	bool manifest_ok;
};

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

static uint64_t id_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ull;
	return h;
}

/* Stop-copy parts are versioned like chunks, in an index space of their own. */
#define STOPCOPY_IDX(i) (0x5709000000000000ull | (i))

/* Word k of a chunk (or stop-copy part) at a given seq is base + k. */
static uint64_t version_base(const struct blob *b, uint64_t kind_idx, uint64_t seq)
{
	return mix(id_hash(b->cfg.id) ^ mix(kind_idx) ^ (seq * 0x9e3779b97f4a7c15ull));
}

/* The bytes a chunk (or stop-copy part) must hold at a given seq. */
static void fill(const struct blob *b, uint8_t *dst, uint64_t kind_idx, uint64_t seq)
{
	uint64_t v = version_base(b, kind_idx, seq);
	uint64_t *w = (uint64_t *)dst;

	for (unsigned int k = 0; k < CHUNK / 8; k++)
		w[k] = v + k;
}

static bool holds(const struct blob *b, const uint8_t *src, uint64_t kind_idx, uint64_t seq)
{
	uint64_t v = version_base(b, kind_idx, seq);
	const uint64_t *w = (const uint64_t *)src;

	for (unsigned int k = 0; k < CHUNK / 8; k++)
		if (w[k] != v + k)
			return false;
	return true;
}

static uint64_t seq_hash(const struct blob *b)
{
	uint64_t h = 0;

	for (uint64_t i = 0; i < b->nchunks; i++)
		h = mix(h ^ b->seq[i] ^ (i << 40));
	return h;
}

/* ---- the device changing while the guest runs ---- */

static void *mutator_main(void *arg)
{
	struct blob *b = arg;
	uint64_t rng = id_hash(b->cfg.id) | 1, carry = 0;
	struct timespec ts = { 0, MUTATE_PERIOD_NS };

	for (;;) {
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&b->lock);
		if (b->quit) {
			pthread_mutex_unlock(&b->lock);
			return NULL;
		}
		/* only while the guest runs, never once frozen */
		bool idle = b->frozen || !b->rate || kvm_vm_paused(b->vm);
		uint64_t bytes = idle ? 0 : b->rate * (uint64_t)MUTATE_PERIOD_NS / 1000000000ull + carry;

		carry = bytes % CHUNK;
		for (uint64_t n = bytes / CHUNK; n; n--) {
			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			uint64_t c = rng % b->nchunks;

			b->seq[c]++;
			b->epoch++;
			fill(b, b->data + c * CHUNK, c, b->seq[c]);
			dirty_bitmap_set(&b->dirty, c);
		}
		pthread_mutex_unlock(&b->lock);
	}
}

/* ---- source ---- */

static int send_part(struct blob *b, struct savevm_out *out, uint32_t kind, uint32_t idx, uint64_t seq,
		     size_t len)
{
	uint8_t hdr[STREAM_PAYLOAD_HDR_SIZE];

	memcpy(b->buf, &kind, 4);
	memcpy(b->buf + 4, &idx, 4);
	memcpy(b->buf + 8, &seq, 8);
	stream_encode_payload_hdr(hdr, STREAM_REC_PART, b->cfg.section_id, (uint32_t)(PART_HDR + len));
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { b->buf, PART_HDR + len } };

	return savevm_out_sendv(out, iov, 2);
}

/* Dirty chunks from the cursor on: 0 = budget spent, 1 = walk finished. */
static int send_dirty(struct blob *b, struct savevm_out *out, uint64_t budget)
{
	uint64_t sent = 0;

	while (sent < budget) {
		uint64_t c = dirty_bitmap_find_next(&b->dirty, b->cursor);

		if (c >= b->nchunks) {
			b->cursor = 0;
			return 1;
		}
		b->cursor = c + 1;
		/* copy under the lock: the bytes sent must be one version */
		pthread_mutex_lock(&b->lock);
		bool was = dirty_bitmap_test_and_clear(&b->dirty, c);
		uint64_t seq = b->seq[c];

		if (was)
			memcpy(b->buf + PART_HDR, b->data + c * CHUNK, CHUNK);
		pthread_mutex_unlock(&b->lock);
		if (!was)
			continue;
		int r = send_part(b, out, PART_CHUNK, (uint32_t)c, seq, CHUNK);

		if (r)
			return r;
		sent += CHUNK;
	}
	return 0;
}

static int blob_save_setup(void *opaque, struct savevm_out *out, char *err, size_t errlen)
{
	struct blob *b = opaque;

	(void)out, (void)err, (void)errlen;
	dirty_bitmap_set_range(&b->dirty, 0, b->nchunks);
	b->cursor = 0;
	b->stop_copy_sent = false;
	return 0;
}

static int blob_save_iterate(void *opaque, struct savevm_out *out)
{
	return send_dirty(opaque, out, ITERATE_BUDGET);
}

static int blob_save_complete(void *opaque, struct savevm_out *out)
{
	struct blob *b = opaque;
	int r;

	pthread_mutex_lock(&b->lock);
	b->frozen = true;
	uint64_t epoch = b->epoch;
	pthread_mutex_unlock(&b->lock);
	b->cursor = 0;
	while ((r = send_dirty(b, out, UINT64_MAX)) == 0)
		;
	if (r < 0)
		return r;
	for (uint64_t i = 0; i < b->nstop; i++) {
		fill(b, b->buf + PART_HDR, STOPCOPY_IDX(i), epoch);
		if ((r = send_part(b, out, PART_STOPCOPY, (uint32_t)i, epoch, CHUNK)))
			return r;
	}
	b->stop_copy_sent = true;
	uint64_t m[4] = { b->nchunks, seq_hash(b), b->cfg.stop_copy, epoch };

	memcpy(b->buf + PART_HDR, m, sizeof(m));
	return send_part(b, out, PART_MANIFEST, 0, 0, sizeof(m));
}

static void blob_save_cleanup(void *opaque)
{
	struct blob *b = opaque;

	/* a failed or cancelled migration: the device runs on */
	pthread_mutex_lock(&b->lock);
	b->frozen = false;
	pthread_mutex_unlock(&b->lock);
}

/* The device's own bitmap is always current: both flavours agree. */
static uint64_t blob_pending(void *opaque, bool exact)
{
	struct blob *b = opaque;

	(void)exact;
	return dirty_bitmap_count(&b->dirty) * CHUNK + (b->stop_copy_sent ? 0 : b->cfg.stop_copy);
}

static int blob_sync(void *opaque, bool final)
{
	(void)opaque, (void)final;
	return 0;	/* the device's own dirty bitmap is always exact */
}

/* ---- destination ---- */

static void blob_load_setup(void *opaque)
{
	struct blob *b = opaque;

	memset(b->seq, 0, b->nchunks * sizeof(*b->seq));
	memset(b->arrived, 0, b->nchunks);
	memset(b->stop_seen, 0, b->nstop);
	b->nr_arrived = 0;
	b->epoch = 0;
	b->manifest_ok = false;
}

static int blob_load_part(void *opaque, struct savevm_in *in, uint32_t len, char *err, size_t errlen)
{
	struct blob *b = opaque;
	uint32_t kind, idx;
	uint64_t seq;
	int r;

	if (len < PART_HDR || len > PART_HDR + CHUNK) {
		snprintf(err, errlen, "%s: part of %u bytes", b->name, len);
		return -EPROTO;
	}
	if ((r = in->src.read(in->src.opaque, b->buf, len)))
		return r;
	memcpy(&kind, b->buf, 4);
	memcpy(&idx, b->buf + 4, 4);
	memcpy(&seq, b->buf + 8, 8);
	const uint8_t *data = b->buf + PART_HDR;

	switch (kind) {
	case PART_CHUNK:
		if (idx >= b->nchunks || len != PART_HDR + CHUNK || !holds(b, data, idx, seq)) {
			snprintf(err, errlen, "%s: chunk %u (seq %llu) is out of range, torn or corrupted",
				 b->name, idx, (unsigned long long)seq);
			return -EPROTO;
		}
		memcpy(b->data + (uint64_t)idx * CHUNK, data, CHUNK);
		b->seq[idx] = seq;
		b->nr_arrived += !b->arrived[idx];
		b->arrived[idx] = 1;
		return 0;
	case PART_STOPCOPY:
		if (idx >= b->nstop || len != PART_HDR + CHUNK ||
		    !holds(b, data, STOPCOPY_IDX(idx), seq)) {
			snprintf(err, errlen, "%s: stop-copy part %u is out of range, torn or corrupted", b->name, idx);
			return -EPROTO;
		}
		b->stop_seen[idx] = 1;
		b->epoch = seq;
		return 0;
	case PART_MANIFEST: {
		uint64_t m[4];

		if (len != PART_HDR + sizeof(m))
			break;
		memcpy(m, data, sizeof(m));
		bool stop_ok = true;

		for (uint64_t i = 0; i < b->nstop; i++)
			stop_ok &= b->stop_seen[i] && (b->nstop == 0 || b->epoch == m[3]);
		if (m[0] != b->nchunks || m[2] != b->cfg.stop_copy) {
			snprintf(err, errlen, "%s: the source's blob has a different size", b->name);
			return -EPROTO;
		}
		/* A real device starts blank: a chunk that never arrived is
		 * lost even if its bytes happen to be what this one began with. */
		if (b->nr_arrived != b->nchunks) {
			snprintf(err, errlen, "%s: state incomplete (%llu of %llu chunks never arrived)", b->name,
				 (unsigned long long)(b->nchunks - b->nr_arrived), (unsigned long long)b->nchunks);
			return -EPROTO;
		}
		if (m[1] != seq_hash(b) || !stop_ok) {
			snprintf(err, errlen, "%s: state incomplete (a chunk's last version or the stop-copy "
				 "state never arrived)", b->name);
			return -EPROTO;
		}
		b->manifest_ok = true;
		return 0;
	}
	default:
		break;
	}
	snprintf(err, errlen, "%s: malformed part (kind %u, %u bytes)", b->name, kind, len);
	return -EPROTO;
}

static int blob_load_complete(void *opaque, char *err, size_t errlen)
{
	struct blob *b = opaque;

	if (!b->manifest_ok) {
		snprintf(err, errlen, "%s: stream ended before the device's manifest", b->name);
		return -EPROTO;
	}
	return 0;
}

static const struct savevm_ops blob_ops = {
	.save_setup = blob_save_setup,
	.save_iterate = blob_save_iterate,
	.save_complete = blob_save_complete,
	.save_cleanup = blob_save_cleanup,
	.pending = blob_pending,
	.sync = blob_sync,
	.load_setup = blob_load_setup,
	.load_part = blob_load_part,
	.load_complete = blob_load_complete,
};

/* ---- configuration ---- */

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	/* strtoull alone would take a sign and leading blanks */
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	uint64_t mult = 1;

	if (!strcmp(end, "K") || !strcmp(end, "k"))
		mult = 1ull << 10;
	else if (!strcmp(end, "M") || !strcmp(end, "m"))
		mult = 1ull << 20;
	else if (!strcmp(end, "G") || !strcmp(end, "g"))
		mult = 1ull << 30;
	else if (*end)
		return -EINVAL;
	if (errno || v > UINT64_MAX / mult)
		return -EINVAL;
	*out = v * mult;
	return 0;
}

int blob_parse(const char *spec, struct blob_config *c, char *err, size_t errlen)
{
	char buf[256];
	bool has_id = false, has_size = false;

	memset(c, 0, sizeof(*c));
	if (strlen(spec) >= sizeof(buf) || strncmp(spec, "blob,", 5)) {
		snprintf(err, errlen, "unknown device '%s' (kmig has: blob,id=NAME,size=SIZE[,dirty-rate=BYTES/S]"
			 "[,stop-copy=SIZE])", spec);
		return -EINVAL;
	}
	strcpy(buf, spec + 5);
	/* strsep, not strtok: an empty option (",," or a trailing comma) is
	 * a typo to refuse, not to skip */
	unsigned int seen = 0;

	for (char *rest = buf, *kv; (kv = strsep(&rest, ","));) {
		static const char *const keys[] = { "id", "size", "dirty-rate", "stop-copy" };
		char *eq = strchr(kv, '=');

		if (!*kv) {
			snprintf(err, errlen, "empty device option in '%s' (a stray comma?)", spec);
			return -EINVAL;
		}
		if (!eq) {
			snprintf(err, errlen, "device option '%s' has no value", kv);
			return -EINVAL;
		}
		*eq = 0;
		const char *v = eq + 1;
		int r = 0;

		for (unsigned int k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			if (!strcmp(kv, keys[k]) && (seen & (1u << k))) {
				snprintf(err, errlen, "device option '%s' given twice", kv);
				return -EINVAL;
			} else if (!strcmp(kv, keys[k])) {
				seen |= 1u << k;
			}
		}
		if (!strcmp(kv, "id")) {
			size_t n = strlen(v);

			r = n == 0 || n > 32 || strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_-") != n ? -EINVAL : 0;
			if (!r) {
				strcpy(c->id, v);
				has_id = true;
			}
		} else if (!strcmp(kv, "size")) {
			r = parse_size(v, &c->size);
			has_size = true;
		} else if (!strcmp(kv, "dirty-rate")) {
			r = parse_size(v, &c->dirty_rate);
		} else if (!strcmp(kv, "stop-copy")) {
			r = parse_size(v, &c->stop_copy);
		} else {
			snprintf(err, errlen, "unknown blob option '%s'", kv);
			return -EINVAL;
		}
		if (r) {
			snprintf(err, errlen, "bad value '%s' for blob option '%s'", v, kv);
			return -EINVAL;
		}
	}
	if (!has_id || !has_size) {
		snprintf(err, errlen, "a blob device needs id= (a-z, 0-9, _ -, up to 32) and size=");
		return -EINVAL;
	}
	if (c->size < CHUNK || c->size % CHUNK || c->size > (64ull << 30) || c->stop_copy % CHUNK ||
	    c->stop_copy > (1ull << 30)) {
		snprintf(err, errlen, "blob '%s': size must be a multiple of 64K up to 64G, stop-copy a "
			 "multiple of 64K up to 1G", c->id);
		return -EINVAL;
	}
	return 0;
}

/* The mutator thread, once the device has a dirty rate: a blob that is
 * never rewritten (and a destination's) needs no thread. */
static int start_mutator(struct blob *b)
{
	if (b->mutator_running || !b->rate)
		return 0;
	int r = -pthread_create(&b->mutator, NULL, mutator_main, b);

	b->mutator_running = !r;
	return r;
}

int blob_register(struct savevm_registry *reg, struct kvm_vm *vm, const struct blob_config *cfg,
		  struct blob **out)
{
	struct blob *b = calloc(1, sizeof(*b));

	if (!b)
		return -ENOMEM;
	b->cfg = *cfg;
	b->vm = vm;
	b->rate = cfg->dirty_rate;
	b->nchunks = cfg->size / CHUNK;
	b->nstop = cfg->stop_copy / CHUNK;
	snprintf(b->name, sizeof(b->name), "blob-%s", cfg->id);
	pthread_mutex_init(&b->lock, NULL);
	b->data = malloc(cfg->size);
	b->seq = calloc(b->nchunks, sizeof(*b->seq));
	b->stop_seen = calloc(b->nstop ? b->nstop : 1, 1);
	b->arrived = calloc(b->nchunks, 1);
	int r = !b->data || !b->seq || !b->stop_seen || !b->arrived ? -ENOMEM : dirty_bitmap_init(&b->dirty, b->nchunks);

	/* real bytes: every chunk holds its first version */
	for (uint64_t c = 0; !r && c < b->nchunks; c++)
		fill(b, b->data + c * CHUNK, c, 0);
	if (!r)
		r = savevm_register(reg, b->name, 0, 1, true, &blob_ops, b);
	if (!r) {
		b->cfg.section_id = (uint32_t)savevm_registry_count(reg);	/* index + 1 */
		r = start_mutator(b);
	}
	if (r) {
		blob_free(b);
		return r;
	}
	*out = b;
	return 0;
}

int blob_set_dirty_rate(struct blob *b, uint64_t rate)
{
	pthread_mutex_lock(&b->lock);
	b->rate = rate;
	pthread_mutex_unlock(&b->lock);
	return start_mutator(b);
}

const char *blob_id(const struct blob *b)
{
	return b->cfg.id;
}

void blob_free(struct blob *b)
{
	if (!b)
		return;
	if (b->mutator_running) {
		pthread_mutex_lock(&b->lock);
		b->quit = true;
		pthread_mutex_unlock(&b->lock);
		pthread_join(b->mutator, NULL);
	}
	dirty_bitmap_fini(&b->dirty);
	free(b->data);
	free(b->seq);
	free(b->stop_seen);
	free(b->arrived);
	free(b);
}
