/* The RAM handler.  Source: walks the dirty bitmap, sends zero pages as
 * headers only and others as iovecs pointing straight into guest memory,
 * up to STREAM_MAX_PAGES_PER_REC pages a record, on the main channel or
 * queued to the multifd channels.  A page may change while its bytes are
 * in flight (and with zero-copy, until the kernel's notification): that is
 * safe because KVM re-protected it before its dirty bit was published, so
 * the change sets the bit again and the page goes again in a later pass or
 * in stop-and-copy, when the guest is stopped until the destination has
 * everything.
 * Destination: checks every header of a record, then moves the payloads
 * from the socket into the guest's memfd (splice), run by run of
 * contiguous pages: no user-space buffer, and no page faulted into a
 * mapping (on this host a fault costs more than the copy; the guest's own
 * first touch maps the page later). */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "savevm/multifd.h"
#include "savevm/ram.h"

/* payload bytes per save_iterate call: small enough to check for cancel
 * and refresh statistics often, large enough to amortise the call */
#define ITERATE_BUDGET (32u << 20)

struct ram_handler {
	struct kvm_vm *vm;
	uint64_t nr_pages;
	uint64_t cursor;
	uint32_t batch, batch_max;
	/* record header then page headers, contiguous: one prefix to send */
	union {
		uint8_t bytes[STREAM_RAM_HDR_SIZE + STREAM_MAX_PAGES_PER_REC * 8];
		uint64_t align;
	} hdr;
	struct iovec iov[STREAM_MAX_PAGES_PER_REC + 1];
	int niov;
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

static int flush(struct ram_handler *h, struct savevm_out *out)
{
	if (!h->batch)
		return 0;
	size_t prefix = STREAM_RAM_HDR_SIZE + h->batch * sizeof(uint64_t);
	int npayload = h->niov - 1, r;

	stream_encode_ram_hdr(h->hdr.bytes, 1, h->batch);
	if (out->mf) {
		r = multifd_send_pages(out->mf, h->hdr.bytes, prefix, h->batch, &h->iov[1], npayload);
	} else {
		h->iov[0] = (struct iovec){ h->hdr.bytes, prefix };
		r = savevm_out_send_pages(out, &out->path, h->iov, h->niov, prefix);
	}
	atomic_fetch_add(&h->headers, h->batch);
	atomic_fetch_add(&h->bytes, prefix + (uint64_t)npayload * KVM_PAGE_SIZE);
	h->batch = 0;
	h->niov = 1;
	return r;
}

static int add_page(struct ram_handler *h, struct savevm_out *out, uint64_t pg)
{
	uint8_t *p = kvm_vm_ram_base(h->vm) + pg * KVM_PAGE_SIZE;
	uint64_t gpa = kvm_vm_offset_to_gpa(h->vm, pg * KVM_PAGE_SIZE);
	bool zero = page_is_zero(p);

	uint64_t ph = stream_page_hdr(gpa, zero);

	memcpy(h->hdr.bytes + STREAM_RAM_HDR_SIZE + h->batch++ * sizeof(ph), &ph, sizeof(ph));
	if (zero) {
		atomic_fetch_add(&h->duplicate, 1);
	} else {
		h->iov[h->niov++] = (struct iovec){ p, KVM_PAGE_SIZE };
		atomic_fetch_add(&h->normal, 1);
	}
	return h->batch >= h->batch_max ? flush(h, out) : 0;
}

/* Under max-bandwidth, records shrink to about a millisecond of the
 * limit, so that no send is a burst. */
static void size_batches(struct ram_handler *h, struct savevm_out *out)
{
	size_t chunk = savevm_rate_chunk(out->rate) / KVM_PAGE_SIZE;

	h->batch_max = chunk < 1 ? 1 : chunk < STREAM_MAX_PAGES_PER_REC ? (uint32_t)chunk
									 : STREAM_MAX_PAGES_PER_REC;
}

/* The walk reached the end: with several channels, a page sent from here
 * on must land after its copy of this walk (multifd.h). */
static int end_walk(struct ram_handler *h, struct savevm_out *out)
{
	int r = flush(h, out);

	h->cursor = 0;
	return r ? r : out->mf ? multifd_send_epoch(out->mf) : 0;
}

/* Send dirty pages until the budget is spent (0) or the bitmap walk
 * reaches the end (1). */
static int send_dirty(struct ram_handler *h, struct savevm_out *out, uint64_t budget)
{
	uint64_t sent = 0;
	int r = 0;

	size_batches(h, out);
	while (!r && sent < budget) {
		uint64_t pg = kvm_dirty_find_next(h->vm, h->cursor);

		if (pg >= h->nr_pages) {
			r = end_walk(h, out);
			return r ? r : 1;
		}
		h->cursor = pg + 1;
		if (!kvm_dirty_test_and_clear(h->vm, pg))
			continue;
		r = add_page(h, out, pg);
		sent += KVM_PAGE_SIZE;
	}
	return r ? r : flush(h, out);
}

static int ram_save_setup(void *opaque, struct savevm_out *out, char *err, size_t errlen)
{
	struct ram_handler *h = opaque;
	int r = kvm_dirty_start(h->vm, err, errlen);

	if (r)
		return r;
	/* Everything the guest ever touched starts dirty; after logging
	 * started, so a page first written from now on is logged. */
	kvm_dirty_mark_all(h->vm);
	atomic_store(&h->holes, h->nr_pages - kvm_dirty_count(h->vm));
	h->sync_error = 0;
	h->cursor = 0;
	h->batch = 0;
	h->niov = 1;
	(void)out;
	return 0;
}

static int ram_save_iterate(void *opaque, struct savevm_out *out)
{
	struct ram_handler *h = opaque;

	return h->sync_error ? h->sync_error : send_dirty(h, out, ITERATE_BUDGET);
}

static int ram_save_complete(void *opaque, struct savevm_out *out)
{
	struct ram_handler *h = opaque;
	int r;

	/* switchover may come mid-walk: pages already sent in it must not
	 * race their final copies on another channel */
	if (h->cursor && (r = end_walk(h, out)))
		return r;
	while ((r = send_dirty(h, out, UINT64_MAX)) == 0)
		;
	return r < 0 ? r : 0;
}

static void ram_save_cleanup(void *opaque)
{
	struct ram_handler *h = opaque;

	kvm_dirty_stop(h->vm);
}

static uint64_t ram_pending(void *opaque, bool exact)
{
	struct ram_handler *h = opaque;

	if (exact) {
		int r = kvm_dirty_sync(h->vm, false);

		/* a figure cannot carry an error: the next iterate fails with it */
		if (r && !h->sync_error)
			h->sync_error = r;
	}
	return kvm_dirty_count(h->vm) * KVM_PAGE_SIZE;
}

static int ram_sync(void *opaque, bool final)
{
	struct ram_handler *h = opaque;

	return kvm_dirty_sync(h->vm, final);
}

/* A page the stream says is zero: fresh memory already is; a page written
 * earlier in this migration goes back to a hole (reads as zero, frees the
 * memory, and maps nothing), or, when RAM was preallocated, is zeroed in
 * place so that it stays allocated. */
static int load_zero_page(struct ram_handler *h, uint64_t pg, char *err, size_t errlen)
{
	static const uint8_t zero[KVM_PAGE_SIZE];
	int fd = kvm_vm_memfd(h->vm);
	off_t off = (off_t)(pg * KVM_PAGE_SIZE);

	if (!h->written[pg])
		return 0;
	h->written[pg] = 0;
	if (kvm_vm_prealloc(h->vm) ? pwrite(fd, zero, KVM_PAGE_SIZE, off) != KVM_PAGE_SIZE
				   : fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, KVM_PAGE_SIZE)) {
		int r = -errno;

		snprintf(err, errlen, "cannot clear guest page 0x%llx: %s",
			 (unsigned long long)(pg * KVM_PAGE_SIZE), strerror(-r));
		return r;
	}
	return 0;
}

/* A run of pages into place.  Fresh memory: splice into the memfd, which
 * allocates page-cache pages without faulting them into a mapping.  RAM
 * preallocated (every page allocated and mapped): read straight into the
 * mapping, which takes no lock, where writes to the memfd all take its
 * inode lock, and would serialise multifd's receivers. */
static int load_run(struct ram_handler *h, struct savevm_in *in, uint64_t first, uint64_t n,
		    char *err, size_t errlen)
{
	struct iovec iov = { kvm_vm_ram_base(h->vm) + first * KVM_PAGE_SIZE, n * KVM_PAGE_SIZE };
	int r = !n ? 0
		: kvm_vm_prealloc(h->vm) ? savevm_in_readv(in, &iov, 1)
					 : savevm_in_splice(in, kvm_vm_memfd(h->vm), first * KVM_PAGE_SIZE,
							    n * KVM_PAGE_SIZE);

	if (r)
		snprintf(err, errlen, "stream truncated while reading page data: %s", strerror(-r));
	return r;
}

static int ram_load(void *opaque, struct savevm_in *in, const uint64_t *hdrs, uint32_t count,
		    char *err, size_t errlen)
{
	struct ram_handler *h = opaque;
	uint64_t pgs[STREAM_MAX_PAGES_PER_REC];
	uint64_t run_first = 0, run_len = 0;
	int r = 0;

	/* every address checked before any byte is written */
	for (uint32_t i = 0; i < count; i++) {
		uint64_t gpa = hdrs[i] & ~STREAM_PAGE_FLAGS_MASK, off;

		if (kvm_vm_gpa_to_offset(h->vm, gpa, &off)) {
			snprintf(err, errlen, "page at guest address 0x%llx is outside guest RAM",
				 (unsigned long long)gpa);
			return -EPROTO;
		}
		pgs[i] = off / KVM_PAGE_SIZE;
	}
	/* payloads come in header order: splice each run of pages that are
	 * also contiguous in RAM in one go */
	for (uint32_t i = 0; i < count && !r; i++) {
		if (hdrs[i] & STREAM_PAGE_ZERO) {
			r = load_zero_page(h, pgs[i], err, errlen);
			continue;
		}
		h->written[pgs[i]] = 1;
		if (run_len && pgs[i] == run_first + run_len) {
			run_len++;
			continue;
		}
		r = load_run(h, in, run_first, run_len, err, errlen);
		run_first = pgs[i];
		run_len = 1;
	}
	if (!r)
		r = load_run(h, in, run_first, run_len, err, errlen);
	atomic_fetch_add(&h->received, count);
	return r;
}

static const struct savevm_ops ram_ops = {
	.save_setup = ram_save_setup,
	.save_iterate = ram_save_iterate,
	.save_complete = ram_save_complete,
	.save_cleanup = ram_save_cleanup,
	.pending = ram_pending,
	.sync = ram_sync,
	.load_ram = ram_load,
};

int ram_handler_register(struct savevm_registry *reg, struct kvm_vm *vm, struct ram_handler **out)
{
	struct ram_handler *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->vm = vm;
	h->nr_pages = kvm_vm_nr_pages(vm);
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
		free(h->written);
		free(h);
	}
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
