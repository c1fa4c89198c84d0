/* The RAM handler.  Source: walks the dirty bitmap, sends zero pages as
 * headers only and others as iovecs pointing straight into guest memory,
 * up to STREAM_MAX_PAGES_PER_REC pages a record.  A page may change while
 * its bytes are in flight: that is safe because KVM re-protected it before
 * its dirty bit was published, so the change sets the bit again and the
 * page goes again in a later pass or in stop-and-copy.
 * Destination: checks every header of a record, then reads the payloads
 * in place into guest memory. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "savevm/ram.h"

/* payload bytes per save_iterate call: small enough to check for cancel
 * and refresh statistics often, large enough to amortise the call */
#define ITERATE_BUDGET (32u << 20)

struct ram_handler {
	struct kvm_vm *vm;
	uint64_t nr_pages;
	uint64_t cursor;
	uint32_t batch;
	uint64_t hdrs[STREAM_MAX_PAGES_PER_REC];
	struct iovec iov[STREAM_MAX_PAGES_PER_REC + 2];
	int niov;
	uint8_t rec[STREAM_RAM_HDR_SIZE];
	_Atomic uint64_t normal, duplicate, holes, headers, received, bytes;
	uint8_t *written;	/* destination: page ever received with data */
	int sync_error;		/* from an exact pending query */
};

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;

	for (unsigned int i = 0; i < KVM_PAGE_SIZE / 8; i += 8) {
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
			return false;
	}
	return true;
}

static int flush(struct ram_handler *h, struct savevm_out *out)
{
	if (!h->batch)
		return 0;
	stream_encode_ram_hdr(h->rec, 1, h->batch);
	h->iov[0] = (struct iovec){ h->rec, sizeof(h->rec) };
	h->iov[1] = (struct iovec){ h->hdrs, h->batch * sizeof(uint64_t) };
	int r = savevm_out_sendv(out, h->iov, h->niov);

	atomic_fetch_add(&h->headers, h->batch);
	atomic_fetch_add(&h->bytes, sizeof(h->rec) + h->batch * sizeof(uint64_t) +
				    (uint64_t)(h->niov - 2) * KVM_PAGE_SIZE);
	h->batch = 0;
	h->niov = 2;
	return r;
}

static int add_page(struct ram_handler *h, struct savevm_out *out, uint64_t pg)
{
	uint8_t *p = kvm_vm_ram_base(h->vm) + pg * KVM_PAGE_SIZE;
	uint64_t gpa = kvm_vm_offset_to_gpa(h->vm, pg * KVM_PAGE_SIZE);
	bool zero = page_is_zero(p);

	h->hdrs[h->batch++] = stream_page_hdr(gpa, zero);
	if (zero) {
		atomic_fetch_add(&h->duplicate, 1);
	} else {
		h->iov[h->niov++] = (struct iovec){ p, KVM_PAGE_SIZE };
		atomic_fetch_add(&h->normal, 1);
	}
	return h->batch == STREAM_MAX_PAGES_PER_REC ? flush(h, out) : 0;
}

/* Send dirty pages until the budget is spent (0) or the bitmap walk
 * reaches the end (1). */
static int send_dirty(struct ram_handler *h, struct savevm_out *out, uint64_t budget)
{
	uint64_t sent = 0;
	int r = 0;

	while (!r && sent < budget) {
		uint64_t pg = kvm_dirty_find_next(h->vm, h->cursor);

		if (pg >= h->nr_pages) {
			h->cursor = 0;
			r = flush(h, out);
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
	h->niov = 2;
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

	h->cursor = 0;
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

static int ram_load(void *opaque, struct savevm_in *in, const uint64_t *hdrs, uint32_t count,
		    char *err, size_t errlen)
{
	struct ram_handler *h = opaque;
	struct iovec iov[STREAM_MAX_PAGES_PER_REC];
	uint64_t pgs[STREAM_MAX_PAGES_PER_REC];
	int n = 0;

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
	for (uint32_t i = 0; i < count; i++) {
		uint8_t *p = kvm_vm_ram_base(h->vm) + pgs[i] * KVM_PAGE_SIZE;

		if (hdrs[i] & STREAM_PAGE_ZERO) {
			/* fresh memory is zero: only clear what we wrote */
			if (h->written[pgs[i]])
				memset(p, 0, KVM_PAGE_SIZE);
		} else {
			h->written[pgs[i]] = 1;
			iov[n++] = (struct iovec){ p, KVM_PAGE_SIZE };
		}
	}
	atomic_fetch_add(&h->received, count);
	int r = n ? savevm_in_readv(in, iov, n) : 0;

	if (r)
		snprintf(err, errlen, "stream truncated while reading page data: %s", strerror(-r));
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
