/* The fuzzers' seed corpora, made by kmig's own source side:
 *
 *   fuzz-gen-seeds --out DIR    write DIR/stream/ and DIR/channel/ seeds
 *   fuzz-gen-seeds --check      make them in memory and load each into a
 *                               fuzz destination: it must accept and
 *                               verify every one (a unit test)
 *
 * The streams come from the real RAM handler and blob devices sending over
 * a real connection (a unix socket, captured on the other end), framed by
 * the stream encoder as the migration thread frames them.  Device states
 * are built item by item in kvm/state.c's format with valid values: this
 * generator runs without KVM.  The channel seeds are the same RAM records
 * behind a channel hello, split into epochs. */
#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvm/kvm-int.h"
#include "kvm/bitmap.h"
#include "ring/ring.h"
#include "savevm/blob.h"
#include "savevm/multifd.h"
#include "savevm/ram.h"
#include "tests/fuzz/fuzz_dest.h"

#define PAGE KVM_PAGE_SIZE

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static void put(struct buf *b, const void *data, size_t len)
{
	if (b->len + len > b->cap) {
		b->cap = (b->len + len) * 2;
		b->p = realloc(b->p, b->cap);
		FUZZ_CHECK(b->p, "out of memory");
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
}

/* ---- capture: a connection whose far end is read into memory ---- */

struct capture {
	char path[108];
	int lfd, rx;
	struct ring_channel *tx;	/* the source sends on kmig's transport */
	pthread_t reader;
	struct buf got;
};

static void *read_all(void *arg)
{
	struct capture *c = arg;
	uint8_t chunk[65536];
	ssize_t n;

	while ((n = read(c->rx, chunk, sizeof(chunk))) > 0 || (n < 0 && errno == EINTR))
		if (n > 0)
			put(&c->got, chunk, (size_t)n);
	return NULL;
}

static void capture_open(struct capture *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ring_uri u;
	char err[256], uri[128];

	snprintf(c->path, sizeof(c->path), "/tmp/kmig-gen-seeds-%d.sock", (int)getpid());
	memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
	unlink(c->path);
	c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	FUZZ_CHECK(c->lfd >= 0 && !bind(c->lfd, (struct sockaddr *)&sa, sizeof(sa)) && !listen(c->lfd, 1),
		   "listen on %s: %s", c->path, strerror(errno));
	snprintf(uri, sizeof(uri), "unix:%s", c->path);
	FUZZ_CHECK(!ring_uri_parse(uri, &u, err, sizeof(err)), "%s", err);
	FUZZ_CHECK(!ring_connect(&u, 2000, &c->tx), "connect to %s", uri);
	c->rx = accept(c->lfd, NULL, NULL);
	FUZZ_CHECK(c->rx >= 0, "accept: %s", strerror(errno));
	FUZZ_CHECK(!pthread_create(&c->reader, NULL, read_all, c), "thread");
}

static void capture_close(struct capture *c)
{
	ring_channel_close(c->tx);
	pthread_join(c->reader, NULL);
	close(c->rx);
	close(c->lfd);
	unlink(c->path);
}

/* ---- the source ---- */

static const struct {
	const char *name;
	uint32_t instance;
	bool iterable;
} sections[] = {
	{ "ram", 0, true },	 { "apic", 0, false },	   { "cpu", 0, false },	   { "apic", 1, false },
	{ "cpu", 1, false },	 { "pic", 0, false },	   { "pic", 1, false },	   { "ioapic", 0, false },
	{ "pit", 0, false },	 { "kvmclock", 0, false }, { "serial", 0, false }, { "blob-gpu0", 0, true },
	{ "blob-nic1", 0, true },
};
#define NR_SECTIONS (sizeof(sections) / sizeof(sections[0]))

struct source {
	struct kvm_mem *mem;
	struct savevm_registry *reg;	/* ram, blob-gpu0, blob-nic1 */
	struct ram_handler *ram;
	struct blob *blobs[2];
	struct savevm_rate rate;
	atomic_bool cancel;
	struct savevm_out out;
};

/* the devices' places in the registry; their states are made below */
static const struct savevm_ops no_ops;

static void fill_page(struct kvm_mem *m, uint64_t pg, uint32_t salt)
{
	uint32_t *w = (uint32_t *)(kvm_mem_base(m) + pg * PAGE);

	for (unsigned int i = 0; i < PAGE / 4; i++)
		w[i] = (uint32_t)(pg * 2654435761u) ^ (i * 40503u) ^ salt;
}

static void source_open(struct source *s, struct capture *c)
{
	char err[256];
	struct blob_config gpu = { .id = "gpu0", .size = 16 << 10, .stop_copy = 8 << 10 };
	struct blob_config nic = { .id = "nic1", .size = 8 << 10 };

	FUZZ_CHECK(!kvm_mem_create(FUZZ_RAM_BYTES, false, &s->mem, err, sizeof(err)), "%s", err);
	/* data pages, a populated page of zeros, and holes between */
	for (uint64_t pg = 0; pg < 4; pg++)
		fill_page(s->mem, pg, 1);
	for (uint64_t pg = 100; pg < 102; pg++)
		fill_page(s->mem, pg, 2);
	memset(kvm_mem_base(s->mem) + 200 * PAGE, 0, PAGE);
	fill_page(s->mem, FUZZ_RAM_BYTES / PAGE - 1, 3);
	/* in sections[] order: a blob's PART records carry its index + 1 */
	s->reg = savevm_registry_new();
	FUZZ_CHECK(s->reg && !ram_handler_register(s->reg, s->mem, NULL, &s->ram), "RAM handler");
	for (size_t i = 1; i < NR_SECTIONS - 2; i++)
		FUZZ_CHECK(!savevm_register(s->reg, sections[i].name, sections[i].instance, 1, false, &no_ops, NULL),
			   "register %s", sections[i].name);
	FUZZ_CHECK(!blob_register(s->reg, NULL, &gpu, &s->blobs[0]), "blob gpu0");
	FUZZ_CHECK(!blob_register(s->reg, NULL, &nic, &s->blobs[1]), "blob nic1");
	savevm_rate_init(&s->rate);
	s->out = (struct savevm_out){ .ch = c->tx, .rate = &s->rate, .cancel = &s->cancel };
	savevm_sendpath_init(&s->out.path, c->tx, SAVEVM_SEND_COPY);
}

static void source_close(struct source *s)
{
	for (size_t i = 0; i < savevm_registry_count(s->reg); i++) {
		struct savevm_entry *e = savevm_registry_at(s->reg, i);

		if (e->iterable)
			e->ops->save_cleanup(e->opaque);
	}
	blob_free(s->blobs[0]);
	blob_free(s->blobs[1]);
	ram_handler_free(s->ram);
	savevm_registry_free(s->reg);
	kvm_mem_destroy(s->mem);
	savevm_rate_destroy(&s->rate);
}

static void emit(struct source *s, const void *p, size_t len)
{
	FUZZ_CHECK(!savevm_out_send(&s->out, p, len), "send");
}

static void send_declarations(struct source *s)
{
	uint8_t b[STREAM_HEADER_SIZE > STREAM_SECTION_MAX_SIZE ? STREAM_HEADER_SIZE : STREAM_SECTION_MAX_SIZE];

	emit(s, b, stream_encode_header(b, &(struct stream_header){ .version = STREAM_VERSION, .page_size = PAGE,
								    .ram_size = FUZZ_RAM_BYTES,
								    .nr_vcpus = FUZZ_NR_VCPUS }));
	for (uint32_t i = 0; i < NR_SECTIONS; i++) {
		struct stream_section sec = { .section_id = i + 1, .instance_id = sections[i].instance, .version = 1,
					      .kind = sections[i].iterable ? STREAM_SECTION_ITERABLE
									   : STREAM_SECTION_DEVICE };

		snprintf(sec.name, sizeof(sec.name), "%s", sections[i].name);
		int n = stream_encode_section(b, sizeof(b), &sec);

		FUZZ_CHECK(n > 0, "section");
		emit(s, b, (size_t)n);
	}
}

static void pass(struct source *s, uint32_t nr)
{
	uint8_t b[STREAM_PASS_END_SIZE];

	for (size_t i = 0; i < savevm_registry_count(s->reg); i++) {
		struct savevm_entry *e = savevm_registry_at(s->reg, i);
		int r;

		if (!e->iterable)
			continue;
		while ((r = e->ops->save_iterate(e->opaque, &s->out)) == 0)
			;
		FUZZ_CHECK(r == 1, "iterate %s: %d", e->name, r);
	}
	emit(s, b, stream_encode_pass_end(b, nr));
}

/* ---- device states, in kvm/state.c's item format ---- */

static void item(struct buf *b, uint32_t tag, const void *data, uint32_t len)
{
	put(b, &tag, 4);
	put(b, &len, 4);
	put(b, data, len);
}

static void device_state(struct buf *b, const char *name, uint32_t instance)
{
	static uint8_t zeros[sizeof(struct kvm_xsave)];

	if (!strcmp(name, "cpu")) {
		struct kvm_regs regs = { .rip = 0x100000, .rflags = 2 };
		struct kvm_msr_entry msrs[2] = { { .index = 0x10, .data = 12345 }, { .index = 0x1b, .data = 0xfee00900 } };
		struct kvm_mp_state mp = { KVM_MP_STATE_RUNNABLE };

		item(b, 1, &regs, sizeof(regs));
		item(b, 2, zeros, sizeof(struct kvm_sregs));
		item(b, 3, zeros, sizeof(struct kvm_xsave));
		item(b, 4, zeros, sizeof(struct kvm_xcrs));
		item(b, 5, msrs, sizeof(msrs));
		item(b, 6, zeros, sizeof(struct kvm_vcpu_events));
		item(b, 7, &mp, sizeof(mp));
		item(b, 8, zeros, sizeof(struct kvm_debugregs));
	} else if (!strcmp(name, "apic")) {
		uint64_t deadline = 0;

		item(b, 16, zeros, sizeof(struct kvm_lapic_state));
		item(b, 17, &deadline, sizeof(deadline));
	} else if (!strcmp(name, "pic") || !strcmp(name, "ioapic")) {
		struct kvm_irqchip chip = { .chip_id = !strcmp(name, "ioapic") ? KVM_IRQCHIP_IOAPIC
							: instance ? KVM_IRQCHIP_PIC_SLAVE : KVM_IRQCHIP_PIC_MASTER };

		item(b, 32, &chip, sizeof(chip));
	} else if (!strcmp(name, "pit")) {
		item(b, 48, zeros, sizeof(struct kvm_pit_state2));
	} else if (!strcmp(name, "kvmclock")) {
		struct kvm_clock_data clock = { .clock = 123456789 };

		item(b, 64, &clock, sizeof(clock));
	} else {
		struct serial16550 uart = { .lsr = 0x60, .dll = 1 };

		item(b, 80, &uart, sizeof(uart));
	}
}

static void send_devices(struct source *s)
{
	for (uint32_t i = 0; i < NR_SECTIONS; i++) {
		struct buf st = { 0 };
		uint8_t hdr[STREAM_PAYLOAD_HDR_SIZE];

		if (sections[i].iterable)
			continue;
		device_state(&st, sections[i].name, sections[i].instance);
		emit(s, hdr, stream_encode_payload_hdr(hdr, STREAM_REC_DEVICE, i + 1, (uint32_t)st.len));
		emit(s, st.p, st.len);
		free(st.p);
	}
}

/* A whole stream: declarations, a bulk pass, a pass after the "guest"
 * rewrote pages (one of them now zeros), stop-and-copy, devices, EOF. */
static void make_stream(struct buf *stream)
{
	struct capture c = { 0 };
	struct source s = { 0 };
	struct ram_stats st;
	char err[256];
	uint8_t eof[STREAM_EOF_SIZE];

	capture_open(&c);
	source_open(&s, &c);
	send_declarations(&s);
	for (size_t i = 0; i < savevm_registry_count(s.reg); i++) {
		struct savevm_entry *e = savevm_registry_at(s.reg, i);

		if (!e->iterable)
			continue;
		FUZZ_CHECK(!e->ops->save_setup(e->opaque, &s.out, err, sizeof(err)), "setup %s: %s", e->name, err);
	}
	pass(&s, 1);
	fill_page(s.mem, 3, 9);
	memset(kvm_mem_base(s.mem) + 5 * PAGE, 0, PAGE);
	fill_page(s.mem, 300, 9);
	dirty_bitmap_set_range(kvm_mem_dirty(s.mem), 3, 4);
	dirty_bitmap_set_range(kvm_mem_dirty(s.mem), 5, 6);
	dirty_bitmap_set_range(kvm_mem_dirty(s.mem), 300, 301);
	pass(&s, 2);
	for (size_t i = 0; i < savevm_registry_count(s.reg); i++) {
		struct savevm_entry *e = savevm_registry_at(s.reg, i);

		if (!e->iterable)
			continue;
		FUZZ_CHECK(!e->ops->save_complete(e->opaque, &s.out), "complete %s", e->name);
	}
	send_devices(&s);
	ram_handler_stats(s.ram, &st);
	emit(&s, eof, stream_encode_eof(eof, &(struct stream_eof){ .nr_sections = NR_SECTIONS,
								     .nr_pages = st.headers }));
	capture_close(&c);
	source_close(&s);
	*stream = c.got;
}

/* ---- channel seeds from the stream's RAM records ---- */

static size_t record_len(const uint8_t *p)
{
	uint32_t t, a, b;

	memcpy(&t, p, 4);
	memcpy(&a, p + 8, 4);
	switch (t) {
	case STREAM_REC_SECTION: memcpy(&b, p + 20, 4); return 24 + b;
	case STREAM_REC_RAM: {
		size_t n = 12 + (size_t)a * 8;

		for (uint32_t i = 0; i < a; i++) {
			uint64_t h;

			memcpy(&h, p + 12 + (size_t)i * 8, 8);
			n += h & STREAM_PAGE_ZERO ? 0 : PAGE;
		}
		return n;
	}
	case STREAM_REC_PART:
	case STREAM_REC_DEVICE: return 12 + a;
	case STREAM_REC_PASS_END: return 8;
	default: return 20;
	}
}

/* hello, then the stream's RAM records, epochs where the stream had
 * passes, and the channel's EOF. */
static void make_channel(const struct buf *stream, struct buf *chan)
{
	uint8_t b[STREAM_EOF_SIZE > STREAM_CHAN_HELLO_SIZE ? STREAM_EOF_SIZE : STREAM_CHAN_HELLO_SIZE];
	uint64_t pages = 0;
	size_t pos = STREAM_HEADER_SIZE;

	put(chan, b, stream_encode_chan_hello(b, &(struct stream_chan_hello){ .nr = 1,
									     .cookie = FUZZ_CHANNEL_COOKIE }));
	for (;;) {
		uint32_t t, count;

		memcpy(&t, stream->p + pos, 4);
		if (t == STREAM_REC_EOF)
			break;
		size_t n = record_len(stream->p + pos);

		if (t == STREAM_REC_RAM || t == STREAM_REC_PASS_END)
			put(chan, stream->p + pos, n);
		if (t == STREAM_REC_RAM) {
			memcpy(&count, stream->p + pos + 8, 4);
			pages += count;
		}
		pos += n;
	}
	put(chan, b, stream_encode_eof(b, &(struct stream_eof){ .nr_pages = pages }));
}

/* The stream with one more RAM record before its EOF that names the same
 * pages twice: data then zero, zero then data, data then data.  kmig's
 * source never sends that, but the format allows it, and the page must end
 * as the last header says. */
static void make_repeats(const struct buf *stream, struct buf *out)
{
	static const uint64_t order[][2] = { { 40, 0 }, { 40, 1 }, { 41, 1 }, { 41, 0 }, { 42, 0 }, { 42, 0 } };
	const size_t n = sizeof(order) / sizeof(order[0]);
	uint8_t rec[STREAM_RAM_HDR_SIZE], page[PAGE];
	struct stream_eof eof;
	size_t pos = STREAM_HEADER_SIZE;
	uint32_t t;

	for (;;) {
		memcpy(&t, stream->p + pos, 4);
		if (t == STREAM_REC_EOF)
			break;
		pos += record_len(stream->p + pos);
	}
	put(out, stream->p, pos);
	put(out, rec, stream_encode_ram_hdr(rec, 1, (uint32_t)n));
	for (size_t i = 0; i < n; i++) {
		uint64_t h = stream_page_hdr(order[i][0] * PAGE, (int)order[i][1]);

		put(out, &h, 8);
	}
	for (size_t i = 0; i < n; i++) {
		if (order[i][1])
			continue;
		memset(page, (int)(0x40 + i), sizeof(page));
		put(out, page, sizeof(page));
	}
	memcpy(&eof.nr_sections, stream->p + pos + 4, 4);
	memcpy(&eof.nr_pages, stream->p + pos + 12, 8);
	eof.nr_pages += n;
	uint8_t e[STREAM_EOF_SIZE];

	put(out, e, stream_encode_eof(e, &eof));
}

/* ---- check or write ---- */

static void must_load(const struct buf *b, bool channel, const char *what)
{
	for (int p = 0; p < 3; p++) {
		/* each receive path: the one fuzz_recv_path_for picks for len+p */
		const char *path = fuzz_recv_path_for(b->len + (size_t)p);
		struct fuzz_dest *d = fuzz_dest_new(path);
		char err[512] = "";
		uint64_t pages;
		int r;

		if (channel) {
			r = multifd_recv_run_mem(b->p, b->len, FUZZ_CHANNEL_COOKIE, fuzz_dest_ram_record, d, &pages, err,
						 sizeof(err));
		} else {
			struct savevm_in in;

			savevm_in_init_mem(&in, b->p, b->len);
			r = savevm_load_stream(fuzz_dest_env(d), &in, err, sizeof(err));
			savevm_in_fini(&in);
			if (!r)
				r = savevm_load_apply_devices(fuzz_dest_env(d)->reg, err, sizeof(err));
		}
		FUZZ_CHECK(!r, "%s seed (%zu bytes) refused on the %s path: %s", what, b->len, path, err);
		fuzz_dest_verify(d, b->p, b->len, channel);
		fuzz_dest_free(d);
	}
}

static void write_seed(const char *dir, const char *sub, const char *name, const void *p, size_t len)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	FILE *f = fopen(path, "wb");

	FUZZ_CHECK(f && fwrite(p, 1, len, f) == len && !fclose(f), "cannot write %s", path);
	printf("%s: %zu bytes\n", path, len);
}

int main(int argc, char **argv)
{
	struct buf stream = { 0 }, chan = { 0 }, repeats = { 0 };
	bool check = argc == 2 && !strcmp(argv[1], "--check");

	if (!check && (argc != 3 || strcmp(argv[1], "--out"))) {
		fprintf(stderr, "usage: fuzz-gen-seeds --out DIR | --check\n");
		return 2;
	}
	make_stream(&stream);
	make_channel(&stream, &chan);
	make_repeats(&stream, &repeats);
	must_load(&stream, false, "stream");
	must_load(&repeats, false, "repeated-pages stream");
	must_load(&chan, true, "channel");
	if (check) {
		printf("seeds: a %zu-byte stream, the same with repeated pages and a %zu-byte channel, accepted "
		       "and verified on every receive path\n", stream.len, chan.len);
	} else {
		write_seed(argv[2], "stream", "whole-stream", stream.p, stream.len);
		write_seed(argv[2], "stream", "repeated-pages", repeats.p, repeats.len);
		write_seed(argv[2], "channel", "whole-channel", chan.p, chan.len);
	}
	free(stream.p);
	free(chan.p);
	free(repeats.p);
	return 0;
}
