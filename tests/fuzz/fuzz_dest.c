/* A destination for the stream fuzzers: see fuzz_dest.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kvm/kvm-int.h"
#include "savevm/blob.h"
#include "savevm/ram.h"
#include "tests/fuzz/fuzz_dest.h"

#define MAX_DEVICES 16
#define PAGE KVM_PAGE_SIZE

struct fake_device {
	struct fuzz_dest *d;
	enum kvm_state_kind kind;
	unsigned int instance;
	uint8_t *loaded;		/* what load_state was given */
	size_t loaded_len;
	bool was_loaded;
};

struct fuzz_dest {
	struct kvm_mem *mem;
	struct savevm_registry *reg;
	struct ram_handler *ram;
	struct kvm_vm vm;		/* only what kvm_state_check reads */
	uint32_t msrs[3];
	struct fake_device devs[MAX_DEVICES];
	unsigned int nr_devs;
	struct blob *blobs[2];
	struct savevm_load_env env;
};

static int dev_check(void *opaque, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	struct fake_device *f = opaque;

	return kvm_state_check(&f->d->vm, f->kind, f->instance, buf, len, err, errlen);
}

static int dev_load(void *opaque, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	struct fake_device *f = opaque;

	/* the loader hands over only what check_state accepted */
	FUZZ_CHECK(!kvm_state_check(&f->d->vm, f->kind, f->instance, buf, len, err, errlen),
		   "a device state the check refused was loaded: %s", err);
	free(f->loaded);
	f->loaded = malloc(len ? len : 1);
	FUZZ_CHECK(f->loaded, "out of memory");
	memcpy(f->loaded, buf, len);
	f->loaded_len = len;
	f->was_loaded = true;
	return 0;
}

static const struct savevm_ops device_ops = { .check_state = dev_check, .load_state = dev_load };

static void add_device(struct fuzz_dest *d, const char *name, enum kvm_state_kind kind, unsigned int instance)
{
	struct fake_device *f = &d->devs[d->nr_devs++];

	*f = (struct fake_device){ .d = d, .kind = kind, .instance = instance };
	FUZZ_CHECK(!savevm_register(d->reg, name, instance, 1, false, &device_ops, f), "register %s", name);
}

const char *fuzz_recv_path_for(size_t len)
{
	static const char *const paths[] = { "splice", "write", "mapping" };

	return paths[len % 3];
}

struct fuzz_dest *fuzz_dest_new(const char *recv_path)
{
	struct fuzz_dest *d = calloc(1, sizeof(*d));
	char err[256];

	FUZZ_CHECK(d, "out of memory");
	FUZZ_CHECK(!kvm_mem_create(FUZZ_RAM_BYTES, false, &d->mem, err, sizeof(err)), "guest RAM: %s", err);
	d->reg = savevm_registry_new();
	FUZZ_CHECK(d->reg, "out of memory");
	setenv("KMIG_RECV_PATH", recv_path, 1);
	FUZZ_CHECK(!ram_handler_register(d->reg, d->mem, NULL, &d->ram), "RAM handler");
	unsetenv("KMIG_RECV_PATH");
	d->msrs[0] = 0x10;		/* TSC */
	d->msrs[1] = 0x1b;		/* APIC base */
	d->msrs[2] = 0x6e0;		/* TSC deadline */
	d->vm.nr_vcpus = FUZZ_NR_VCPUS;
	d->vm.msr_list = d->msrs;
	d->vm.nr_msrs = 3;
	/* devices_register's names, kinds and order */
	for (unsigned int i = 0; i < FUZZ_NR_VCPUS; i++) {
		add_device(d, "apic", KVM_STATE_APIC, i);
		add_device(d, "cpu", KVM_STATE_CPU, i);
	}
	add_device(d, "pic", KVM_STATE_PIC, 0);
	add_device(d, "pic", KVM_STATE_PIC, 1);
	add_device(d, "ioapic", KVM_STATE_IOAPIC, 0);
	add_device(d, "pit", KVM_STATE_PIT, 0);
	add_device(d, "kvmclock", KVM_STATE_KVMCLOCK, 0);
	add_device(d, "serial", KVM_STATE_SERIAL, 0);
	/* iterable devices with PART records, in 4 KiB chunks (see meson.build);
	 * never rewritten (no thread) */
	struct blob_config gpu = { .id = "gpu0", .size = 16 << 10, .stop_copy = 8 << 10 };
	struct blob_config nic = { .id = "nic1", .size = 8 << 10 };

	FUZZ_CHECK(!blob_register(d->reg, &d->vm, &gpu, &d->blobs[0]), "blob gpu0");
	FUZZ_CHECK(!blob_register(d->reg, &d->vm, &nic, &d->blobs[1]), "blob nic1");
	d->env = (struct savevm_load_env){ .reg = d->reg, .ram_size = FUZZ_RAM_BYTES, .nr_vcpus = FUZZ_NR_VCPUS };
	return d;
}

void fuzz_dest_free(struct fuzz_dest *d)
{
	if (!d)
		return;
	for (unsigned int i = 0; i < d->nr_devs; i++)
		free(d->devs[i].loaded);
	blob_free(d->blobs[0]);
	blob_free(d->blobs[1]);
	ram_handler_free(d->ram);
	savevm_registry_free(d->reg);
	kvm_mem_destroy(d->mem);
	free(d);
}

/* Back to a fresh destination: RAM all holes, nothing declared, held or
 * loaded.  (The loader's load_setup resets the RAM and blob entries too;
 * a channel's run has no such start, so do it here as well.) */
static void reset(struct fuzz_dest *d)
{
	FUZZ_CHECK(!fallocate(kvm_mem_fd(d->mem), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
			      (off_t)FUZZ_RAM_BYTES), "punch guest RAM: %s", strerror(errno));
	savevm_load_reset(d->reg);
	for (size_t i = 0; i < savevm_registry_count(d->reg); i++) {
		struct savevm_entry *e = savevm_registry_at(d->reg, i);

		if (e->ops->load_setup)
			e->ops->load_setup(e->opaque);
	}
	for (unsigned int i = 0; i < d->nr_devs; i++) {
		free(d->devs[i].loaded);
		d->devs[i].loaded = NULL;
		d->devs[i].loaded_len = 0;
		d->devs[i].was_loaded = false;
	}
}

struct fuzz_dest *fuzz_dest_shared(const char *recv_path)
{
	static struct fuzz_dest *shared[3];
	static const char *const paths[3] = { "splice", "write", "mapping" };
	unsigned int i = 0;

	while (i < 2 && strcmp(paths[i], recv_path))
		i++;
	if (!shared[i])
		shared[i] = fuzz_dest_new(paths[i]);
	reset(shared[i]);
	return shared[i];
}

const struct savevm_load_env *fuzz_dest_env(struct fuzz_dest *d)
{
	return &d->env;
}

int fuzz_dest_ram_record(void *opaque, struct savevm_in *in, uint64_t *pages, char *err, size_t errlen)
{
	struct fuzz_dest *d = opaque;
	uint64_t hdrs[STREAM_MAX_PAGES_PER_REC];
	uint32_t id, count;
	int r = stream_read_ram(&in->src, PAGE, &id, hdrs, &count, err, errlen);

	*pages = 0;
	if (r)
		return r;
	if (id != 1) {		/* the RAM entry is registered first */
		snprintf(err, errlen, "RAM record for section %u", id);
		return -EPROTO;
	}
	struct savevm_entry *e = savevm_registry_at(d->reg, 0);

	*pages = count;
	return e->ops->load_ram(e->opaque, in, hdrs, count, err, errlen);
}

void fuzz_dest_check_bounds(struct fuzz_dest *d)
{
	struct stat st;

	FUZZ_CHECK(!fstat(kvm_mem_fd(d->mem), &st), "fstat: %s", strerror(errno));
	FUZZ_CHECK((uint64_t)st.st_size == FUZZ_RAM_BYTES, "guest RAM's file grew to %lld bytes: a write past RAM",
		   (long long)st.st_size);
}

/* ---- the independent decode ---- */

#define NR_PAGES (FUZZ_RAM_BYTES / PAGE)
#define PAGE_ZERO SIZE_MAX

struct model {
	size_t page[NR_PAGES];		/* offset of the payload in buf, PAGE_ZERO */
	uint8_t touched[NR_PAGES];
	struct { char name[STREAM_MAX_NAME + 1]; uint32_t instance; } sec[STREAM_MAX_SECTIONS + 1];
};

static uint32_t u32_at(const uint8_t *buf, size_t len, size_t off)
{
	uint32_t v;

	FUZZ_CHECK(off + 4 <= len, "accepted stream ends inside a record at %zu", off);
	memcpy(&v, buf + off, 4);
	return v;
}

static size_t model_ram(struct fuzz_dest *d, struct model *m, const uint8_t *buf, size_t len, size_t pos)
{
	uint32_t count = u32_at(buf, len, pos + 8);
	size_t payload = pos + 12 + (size_t)count * 8;

	for (uint32_t i = 0; i < count; i++) {
		uint64_t h, off;

		FUZZ_CHECK(pos + 12 + (size_t)i * 8 + 8 <= len, "truncated page headers");
		memcpy(&h, buf + pos + 12 + (size_t)i * 8, 8);
		FUZZ_CHECK(!kvm_mem_gpa_to_offset(d->mem, h & ~(uint64_t)(PAGE - 1), &off),
			   "accepted a page at gpa 0x%llx outside RAM", (unsigned long long)h);
		uint64_t pg = off / PAGE;

		m->touched[pg] = 1;
		if (h & STREAM_PAGE_ZERO) {
			m->page[pg] = PAGE_ZERO;
		} else {
			m->page[pg] = payload;
			payload += PAGE;
		}
	}
	return payload;
}

static void model_device(struct fuzz_dest *d, struct model *m, const uint8_t *buf, size_t len, size_t pos)
{
	uint32_t id = u32_at(buf, len, pos + 4), n = u32_at(buf, len, pos + 8);

	FUZZ_CHECK(id && id <= STREAM_MAX_SECTIONS, "device record for section %u", id);
	struct savevm_entry *e = savevm_registry_find(d->reg, m->sec[id].name, m->sec[id].instance);

	FUZZ_CHECK(e && !e->iterable, "device record for '%s'", m->sec[id].name);
	struct fake_device *f = e->opaque;

	FUZZ_CHECK(f->was_loaded && f->loaded_len == n && !memcmp(f->loaded, buf + pos + 12, n),
		   "device %s/%u was loaded with other bytes than the stream's (%zu, stream %u)", e->name,
		   e->instance_id, f->loaded_len, n);
}

/* One record at pos; returns the next, or 0 after EOF. */
static size_t model_record(struct fuzz_dest *d, struct model *m, const uint8_t *buf, size_t len, size_t pos)
{
	switch (u32_at(buf, len, pos)) {
	case STREAM_REC_SECTION: {
		uint32_t id = u32_at(buf, len, pos + 4), n = u32_at(buf, len, pos + 20);

		FUZZ_CHECK(id && id <= STREAM_MAX_SECTIONS && n <= STREAM_MAX_NAME, "section %u", id);
		memcpy(m->sec[id].name, buf + pos + 24, n);
		m->sec[id].name[n] = 0;
		m->sec[id].instance = u32_at(buf, len, pos + 8);
		return pos + 24 + n;
	}
	case STREAM_REC_RAM: return model_ram(d, m, buf, len, pos);
	case STREAM_REC_PART: return pos + 12 + u32_at(buf, len, pos + 8);
	case STREAM_REC_DEVICE:
		model_device(d, m, buf, len, pos);
		return pos + 12 + u32_at(buf, len, pos + 8);
	case STREAM_REC_PASS_END: return pos + 8;
	case STREAM_REC_CHANNELS: return pos + 20;
	case STREAM_REC_EOF: return 0;
	}
	FUZZ_CHECK(0, "accepted stream has a record of type %u at %zu", u32_at(buf, len, pos), pos);
	return 0;
}

static const uint8_t zero_page[PAGE];

static void mark_populated(void *ctx, uint64_t first, uint64_t end)
{
	uint8_t *populated = ctx;

	for (uint64_t pg = first; pg < end && pg < NR_PAGES; pg++)
		populated[pg] = 1;
}

/* Holes read as zeros: only populated pages are read (reading a hole
 * would populate it, 16 MiB per run). */
static void compare_ram(struct fuzz_dest *d, const struct model *m, const uint8_t *buf)
{
	static uint8_t populated[NR_PAGES];
	const uint8_t *ram = kvm_mem_base(d->mem);

	memset(populated, 0, sizeof(populated));
	kvm_mem_for_each_populated(d->mem, mark_populated, populated);
	for (uint64_t pg = 0; pg < NR_PAGES; pg++) {
		const uint8_t *want = !m->touched[pg] || m->page[pg] == PAGE_ZERO ? zero_page : buf + m->page[pg];
		const uint8_t *have = populated[pg] ? ram + pg * PAGE : zero_page;

		FUZZ_CHECK(!memcmp(have, want, PAGE), "guest page %llu is not what the stream said (%s, %s)",
			   (unsigned long long)pg,
			   !m->touched[pg] ? "never sent" : m->page[pg] == PAGE_ZERO ? "zero page" : "data page",
			   populated[pg] ? "populated" : "a hole");
	}
}

void fuzz_dest_verify(struct fuzz_dest *d, const uint8_t *buf, size_t len, int channel)
{
	struct model *m = calloc(1, sizeof(*m));
	size_t pos = channel ? STREAM_CHAN_HELLO_SIZE : STREAM_HEADER_SIZE;

	FUZZ_CHECK(m, "out of memory");
	while ((pos = model_record(d, m, buf, len, pos)))
		;
	compare_ram(d, m, buf);
	for (unsigned int i = 0; !channel && i < d->nr_devs; i++)
		FUZZ_CHECK(d->devs[i].was_loaded, "device %u never loaded from an accepted stream", i);
	free(m);
}
