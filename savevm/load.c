/* The destination's stream loader (see load.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "kvm/kvm.h"
#include "savevm/load.h"

struct load_ctx {
	const struct savevm_load_env *env;
	struct savevm_in *in;
	struct savevm_entry *by_id[STREAM_MAX_SECTIONS + 1];
	uint32_t nr_sections;
	uint32_t last_pass;
	uint64_t pages;
	bool data_seen;			/* a record past the declarations */
	struct multifd_recv *mr;	/* RAM channels, once announced */
	char *err;
	size_t errlen;
};

static int load_header(struct load_ctx *c)
{
	struct stream_header h;
	int r = stream_read_header(&c->in->src, &h, c->err, c->errlen);

	if (r)
		return r;
	if (h.ram_size != c->env->ram_size || h.nr_vcpus != c->env->nr_vcpus) {
		snprintf(c->err, c->errlen,
			 "stream is for a guest with %" PRIu64 " MiB and %u vCPUs; this one has %" PRIu64
			 " MiB and %u (start the destination with the same --mem and --vcpus)",
			 h.ram_size >> 20, h.nr_vcpus, c->env->ram_size >> 20, c->env->nr_vcpus);
		return -EPROTO;
	}
	return 0;
}

static int load_section(struct load_ctx *c)
{
	struct stream_section s;
	int r = stream_read_section(&c->in->src, &s, c->err, c->errlen);

	if (r)
		return r;
	struct savevm_entry *e = savevm_registry_find(c->env->reg, s.name, s.instance_id);

	if (!e) {
		snprintf(c->err, c->errlen, "unknown section '%s' instance %u", s.name, s.instance_id);
		return -EPROTO;
	}
	/* the codec has refused ids 0 and STREAM_MAX_SECTIONS and above */
	if (e->declared || c->by_id[s.section_id]) {
		snprintf(c->err, c->errlen, "duplicate section '%s' instance %u (id %u)", s.name,
			 s.instance_id, s.section_id);
		return -EPROTO;
	}
	if ((s.kind == STREAM_SECTION_ITERABLE) != e->iterable || s.version != e->version) {
		snprintf(c->err, c->errlen, "section '%s' has kind %u version %u; expected %s version %u",
			 s.name, s.kind, s.version, e->iterable ? "iterable" : "device", e->version);
		return -EPROTO;
	}
	e->declared = true;
	c->by_id[s.section_id] = e;
	c->nr_sections++;
	return 0;
}

/* The entry a record's section id names; err gets why not (the caller's
 * buffer: RAM channel threads have their own). */
static struct savevm_entry *section(struct load_ctx *c, uint32_t id, bool iterable, const char *rec,
				    char *err, size_t errlen)
{
	struct savevm_entry *e = id && id <= STREAM_MAX_SECTIONS ? c->by_id[id] : NULL;

	if (!e)
		snprintf(err, errlen, "%s record for undeclared section id %u", rec, id);
	else if (e->iterable != iterable) {
		snprintf(err, errlen, "%s record for section '%s', which is %s", rec, e->name,
			 e->iterable ? "iterable" : "a device");
		e = NULL;
	}
	return e;
}

/* The section map is complete (and only read) once RAM flows, so RAM
 * channel threads share it. */
static struct savevm_entry *ram_section(struct load_ctx *c, uint32_t id, char *err, size_t errlen)
{
	struct savevm_entry *e = section(c, id, true, "RAM", err, errlen);

	if (e && !e->ops->load_ram) {
		snprintf(err, errlen, "RAM record for section '%s'", e->name);
		e = NULL;
	}
	return e;
}

/* One RAM record from in (main channel or a RAM channel's thread). */
static int read_ram_record(void *opaque, struct savevm_in *in, uint64_t *pages, char *err, size_t errlen)
{
	struct load_ctx *c = opaque;
	uint64_t hdrs[STREAM_MAX_PAGES_PER_REC];
	uint32_t id, count;
	int r = stream_read_ram(&in->src, KVM_PAGE_SIZE, &id, hdrs, &count, err, errlen);

	*pages = 0;
	if (r)
		return r;
	struct savevm_entry *e = ram_section(c, id, err, errlen);

	if (!e)
		return -EPROTO;
	*pages = count;
	return e->ops->load_ram(e->opaque, in, hdrs, count, err, errlen);
}

static int load_ram(struct load_ctx *c)
{
	uint64_t pages;

	if (c->mr) {
		snprintf(c->err, c->errlen, "RAM record on the main connection of a multifd stream");
		return -EPROTO;
	}
	int r = read_ram_record(c, c->in, &pages, c->err, c->errlen);

	c->pages += pages;
	return r;
}

/* CHANNELS: RAM comes on further connections; accept them now. */
static int load_channels(struct load_ctx *c)
{
	const struct savevm_load_env *env = c->env;
	struct stream_channels sc;
	struct multifd_recv *mr = NULL;
	int r = stream_read_channels(&c->in->src, &sc, c->err, c->errlen);

	if (r)
		return r;
	if (c->data_seen || c->mr || !c->nr_sections) {
		snprintf(c->err, c->errlen, "CHANNELS record %s",
			 c->mr ? "sent twice" : "not right after the sections");
		return -EPROTO;
	}
	if (!env->open_channels) {
		snprintf(c->err, c->errlen, "CHANNELS record: this destination takes RAM on one connection");
		return -EPROTO;
	}
	r = env->open_channels(env->opaque, &sc, c->in, read_ram_record, c, &mr, c->err, c->errlen);
	if (env->publish_channels)
		env->publish_channels(env->opaque, mr, sc.nr);
	c->mr = mr;
	return r;
}

/* Tear down the RAM channels (joined first, so nothing writes RAM after). */
static void end_recv_channels(struct load_ctx *c)
{
	if (c->env->publish_channels)
		c->env->publish_channels(c->env->opaque, NULL, 0);
	multifd_recv_free(c->mr);
	c->mr = NULL;
}

static int load_part(struct load_ctx *c)
{
	uint32_t id, len;
	int r = stream_read_payload_hdr(&c->in->src, STREAM_MAX_PART, &id, &len, c->err, c->errlen);

	if (r)
		return r;
	struct savevm_entry *e = section(c, id, true, "PART", c->err, c->errlen);

	if (!e || !e->ops->load_part) {
		if (e)
			snprintf(c->err, c->errlen, "PART record for section '%s', which takes none", e->name);
		return -EPROTO;
	}
	return e->ops->load_part(e->opaque, c->in, len, c->err, c->errlen);
}

static int load_device(struct load_ctx *c)
{
	uint32_t id, len;
	int r = stream_read_payload_hdr(&c->in->src, STREAM_MAX_DEVICE, &id, &len, c->err, c->errlen);

	if (r)
		return r;
	struct savevm_entry *e = section(c, id, false, "DEVICE", c->err, c->errlen);

	if (!e)
		return -EPROTO;
	if (e->pending_state) {
		snprintf(c->err, c->errlen, "device '%s' instance %u sent twice", e->name, e->instance_id);
		return -EPROTO;
	}
	uint8_t *buf = malloc(len ? len : 1);

	if (!buf)
		return -ENOMEM;
	r = c->in->src.read(c->in->src.opaque, buf, len);
	if (!r)
		r = e->ops->check_state(e->opaque, buf, len, c->err, c->errlen);
	if (r) {
		if (r == -EPIPE)
			snprintf(c->err, c->errlen, "stream truncated inside device '%s'", e->name);
		free(buf);
		return r;
	}
	e->pending_state = buf;
	e->pending_len = len;
	return 0;
}

static int load_eof(struct load_ctx *c)
{
	struct stream_eof eof;
	int r = stream_read_eof(&c->in->src, &eof, c->err, c->errlen);

	if (r)
		return r;
	if (c->mr) {
		uint64_t pages;

		r = multifd_recv_finish(c->mr, &pages, c->err, c->errlen);
		if (r)
			return r;
		c->pages += pages;
	}
	if (eof.nr_sections != c->nr_sections || eof.nr_pages != c->pages) {
		snprintf(c->err, c->errlen,
			 "end of stream does not match: %u sections and %" PRIu64 " pages announced, %u and %"
			 PRIu64 " received", eof.nr_sections, eof.nr_pages, c->nr_sections, c->pages);
		return -EPROTO;
	}
	for (size_t i = 0; i < savevm_registry_count(c->env->reg); i++) {
		struct savevm_entry *e = savevm_registry_at(c->env->reg, i);

		if (!e->declared || (!e->iterable && !e->pending_state)) {
			snprintf(c->err, c->errlen, "stream ended without %s '%s' instance %u",
				 e->declared ? "the state of" : "section", e->name, e->instance_id);
			return -EPROTO;
		}
		if (e->iterable && e->ops->load_complete) {
			int r = e->ops->load_complete(e->opaque, c->err, c->errlen);

			if (r)
				return r;
		}
	}
	return 0;
}

/* Read records until a valid EOF; nothing but guest RAM is touched. */
static int load_stream(struct load_ctx *c)
{
	int r = load_header(c);

	while (!r) {
		enum stream_rec_type t;

		if ((r = stream_read_type(&c->in->src, &t, c->err, c->errlen)))
			break;
		if (t == STREAM_REC_SECTION && (c->data_seen || c->mr)) {
			snprintf(c->err, c->errlen, "section declared after data");
			return -EPROTO;
		}
		c->data_seen |= t != STREAM_REC_SECTION && t != STREAM_REC_CHANNELS;
		switch (t) {
		case STREAM_REC_SECTION: r = load_section(c); break;
		case STREAM_REC_CHANNELS: r = load_channels(c); break;
		case STREAM_REC_RAM: r = load_ram(c); break;
		case STREAM_REC_DEVICE: r = load_device(c); break;
		case STREAM_REC_PART: r = load_part(c); break;
		case STREAM_REC_PASS_END: {
			uint32_t pass;
			r = stream_read_pass_end(&c->in->src, &pass, c->err, c->errlen);
			if (!r && pass <= c->last_pass) {
				snprintf(c->err, c->errlen, "pass %u after pass %u", pass, c->last_pass);
				r = -EPROTO;
			}
			c->last_pass = pass;
			break;
		}
		case STREAM_REC_EOF:
			return load_eof(c);
		}
	}
	return r;
}

/* The main stream failed with RAM channels open: stop them, and if the
 * main stream only broke because a channel failed first (the source gave
 * up, or the channel stopped the main reads), report that channel's
 * reason and error instead.  Returns the error to report. */
static int channel_failure(struct load_ctx *c, int r)
{
	char cerr[512];
	uint64_t pages;

	multifd_recv_abort(c->mr);
	int cr = multifd_recv_finish(c->mr, &pages, cerr, sizeof(cerr));

	if (cr && cr != -ECANCELED && (r == -EPIPE || r == -ECANCELED)) {
		snprintf(c->err, c->errlen, "%s", cerr);
		return cr;
	}
	return r;
}

int savevm_load_apply_devices(struct savevm_registry *reg, char *err, size_t errlen)
{
	for (size_t i = 0; i < savevm_registry_count(reg); i++) {
		struct savevm_entry *e = savevm_registry_at(reg, i);

		if (e->iterable)
			continue;
		uint64_t t0 = kmig_now_ns();
		int r = e->ops->load_state(e->opaque, e->pending_state, e->pending_len, err, errlen);

		e->load_time_us = (kmig_now_ns() - t0) / 1000;
		if (r)
			return r;
	}
	return 0;
}

void savevm_load_reset(struct savevm_registry *reg)
{
	for (size_t i = 0; i < savevm_registry_count(reg); i++) {
		struct savevm_entry *e = savevm_registry_at(reg, i);

		free(e->pending_state);
		e->pending_state = NULL;
		e->pending_len = 0;
		e->declared = false;
	}
}

int savevm_load_stream(const struct savevm_load_env *env, struct savevm_in *in, char *err, size_t errlen)
{
	/* the section map is 32 KiB: not for a thread's stack */
	struct load_ctx *c = calloc(1, sizeof(*c));

	if (!c) {
		snprintf(err, errlen, "out of memory for the stream loader");
		return -ENOMEM;
	}
	*c = (struct load_ctx){ .env = env, .in = in, .err = err, .errlen = errlen };
	err[0] = 0;
	for (size_t i = 0; i < savevm_registry_count(env->reg); i++) {
		struct savevm_entry *e = savevm_registry_at(env->reg, i);

		if (e->ops->load_setup)
			e->ops->load_setup(e->opaque);
	}
	int r = load_stream(c);

	if (r && c->mr)
		r = channel_failure(c, r);
	end_recv_channels(c);
	if (r && !err[0])
		snprintf(err, errlen, "%s", strerror(-r));
	free(c);
	return r;
}
