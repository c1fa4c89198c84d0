/* The RAM path alone: see ramlink.h.  The stream is the real one, cut down
 * to what RAM needs: [CHANNELS], RAM records (or, with channels, their
 * RAM records on the channels), PASS_END after every pass, EOF. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/cutproxy.h"
#include "bench/ramlink.h"
#include "ring/ring.h"
#include "savevm/load.h"
#include "savevm/multifd.h"

#define CONNECT_TIMEOUT_MS 5000
#define RAM_SECTION_ID 1u

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec * 1e-6;
}

/* A page's fingerprint (FNV-1a over 64-bit words): enough to tell a page
 * that differs, cheap enough for a few GiB. */
static uint64_t page_hash(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	uint64_t h = 0xcbf29ce484222325ull;

	for (unsigned int i = 0; i < KVM_PAGE_SIZE / 8; i++)
		h = (h ^ w[i]) * 0x100000001b3ull;
	return h;
}

static uint64_t zero_page_hash(void)
{
	static const uint8_t zero[KVM_PAGE_SIZE] __attribute__((aligned(8)));

	return page_hash(zero);
}

static void map_range(void *map, uint64_t first, uint64_t end)
{
	memset((uint8_t *)map + first, 1, end - first);
}

/* One byte per page: 1 where the memfd holds data (not a hole). */
static void populated_map(struct kvm_mem *m, uint8_t *map)
{
	memset(map, 0, kvm_mem_nr_pages(m));
	kvm_mem_for_each_populated(m, map_range, map);
}

/* Holes hash as zero pages without being read: reading a hole of a
 * shared memfd mapping would allocate it. */
static void hash_pages(struct kvm_mem *m, const uint8_t *map, uint64_t *hash)
{
	uint64_t zh = zero_page_hash();

	for (uint64_t pg = 0; pg < kvm_mem_nr_pages(m); pg++)
		hash[pg] = map[pg] ? page_hash(kvm_mem_base(m) + pg * KVM_PAGE_SIZE) : zh;
}

static int write_all(int fd, const void *buf, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t w = write(fd, (const uint8_t *)buf + done, len - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -EIO;
		done += (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t r = read(fd, (uint8_t *)buf + done, len - done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -EIO;
		done += (size_t)r;
	}
	return 0;
}

/* ------------------------------------------------------- destination */

/* What the child tells the parent, then the page hashes and map. */
struct dst_report {
	int status;
	double done_at;		/* CLOCK_MONOTONIC: EOF handled */
	double cpu;		/* from its first connection to EOF */
	uint64_t pages;
	char recv_path[32];
	char err[512];
};

struct dst {
	const struct ramlink_opts *o;
	struct kvm_mem *mem;
	struct savevm_registry *reg;
	struct ram_handler *ram;
	struct ring_listener *l;
	struct ring_channel *ch;
	const struct ring_tls_peer *tls;	/* NULL: plaintext */
};

static int dst_open_channels(void *opaque, const struct stream_channels *sc, struct savevm_in *main,
			     multifd_ram_fn fn, void *fn_opaque, struct multifd_recv **mr, char *err,
			     size_t errlen)
{
	struct dst *d = opaque;

	return multifd_recv_start(d->l, sc, main->ch, d->tls, fn, fn_opaque, mr, err, errlen);
}

/* The credentials of side (client/ or server/) of a tls-certs set. */
static int ramlink_tls(const char *dir, bool server, struct ring_tls_peer *p, char *err, size_t errlen)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s/%s", dir, server ? "server" : "client");
	memset(p, 0, sizeof(*p));
	p->hostname = "127.0.0.1";
	return ring_tls_creds_load(path, server, true, &p->creds, err, errlen);
}

/* The TLS handshake on a main connection; *ch becomes the TLS channel. */
static int ramlink_secure(struct ring_channel **ch, const struct ring_tls_peer *p, char *err, size_t errlen)
{
	struct ring_channel *w;
	int r = ring_tls_wrap(*ch, p, 5000, &w, err, errlen);

	if (!r)
		*ch = w;
	return r;
}

/* The stream through kmig's own loader (savevm/load.h), as a VM's is. */
static int dst_receive(struct dst *d, struct dst_report *rep)
{
	const struct savevm_load_env env = { .reg = d->reg, .ram_size = kvm_mem_size(d->mem), .nr_vcpus = 1,
					     .open_channels = dst_open_channels, .opaque = d };
	struct savevm_in in;
	struct ram_stats st;
	int r = ring_accept(d->l, &d->ch, 30000);

	if (r) {
		snprintf(rep->err, sizeof(rep->err), "no connection: %s", strerror(-r));
		return r;
	}
	double cpu0 = cpu_s();

	ring_channel_set_timeout(d->ch, d->o->io_timeout_ms);
	if (d->tls && (r = ramlink_secure(&d->ch, d->tls, rep->err, sizeof(rep->err))))
		return r;
	if (d->o->silent == RAMLINK_SILENT_DST) {
		/* hold the connection and read nothing */
		usleep(4000 * (useconds_t)d->o->io_timeout_ms);
		rep->done_at = now_s();
		return 0;
	}
	savevm_in_init(&in, d->ch);
	r = savevm_load_stream(&env, &in, rep->err, sizeof(rep->err));
	savevm_in_fini(&in);
	rep->done_at = now_s();
	rep->cpu = cpu_s() - cpu0;
	ram_handler_stats(d->ram, &st);
	rep->pages = st.received;
	return r;
}

/* The destination's other host: a network namespace of `ip netns`. */
static int enter_netns(const char *name, char *err, size_t errlen)
{
	char path[256];
	int fd, r = 0;

	snprintf(path, sizeof(path), "/var/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot enter network namespace %s: %s", name, strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	return r;
}

/* The child: listen, tell the parent where, receive, report. */
static void dst_main(const struct ramlink_opts *o, int to_parent)
{
	struct dst d = { .o = o };
	struct dst_report rep = { 0 };
	struct ring_uri uri;
	char where[300] = "";
	int r;

	if (o->recv_path)
		setenv("KMIG_RECV_PATH", o->recv_path, 1);
	r = o->dst_netns ? enter_netns(o->dst_netns, rep.err, sizeof(rep.err)) : 0;
	if (r) {
		write_all(to_parent, where, sizeof(where));
		write_all(to_parent, &rep, sizeof(rep));
		_exit(1);
	}
	struct ring_tls_peer tls = { 0 };

	r = o->tls_dir ? ramlink_tls(o->tls_dir, true, &tls, rep.err, sizeof(rep.err)) : 0;
	if (!r && o->tls_dir)
		d.tls = &tls;
	if (!r)
		r = kvm_mem_create(o->mem_bytes, o->dst_prealloc, &d.mem, rep.err, sizeof(rep.err));
	if (!r && !(d.reg = savevm_registry_new()))
		r = -ENOMEM;
	if (!r)
		r = ram_handler_register(d.reg, d.mem, NULL, &d.ram);
	if (!r)
		r = ring_uri_parse(o->uri, &uri, rep.err, sizeof(rep.err));
	if (!r)
		r = ring_listen(&uri, &d.l);
	if (!r) {
		struct ring_uri bound;

		ring_listener_uri(d.l, &bound);
		ring_uri_format(&bound, where, sizeof(where));
	} else if (!rep.err[0]) {
		snprintf(rep.err, sizeof(rep.err), "cannot listen on %s: %s", o->uri, strerror(-r));
	}
	write_all(to_parent, where, sizeof(where));
	if (!r) {
		r = dst_receive(&d, &rep);
		ram_handler_recv_paths(d.ram, rep.recv_path, sizeof(rep.recv_path));
	}
	rep.status = r;
	write_all(to_parent, &rep, sizeof(rep));
	if (!r) {
		uint64_t n = kvm_mem_nr_pages(d.mem);
		uint64_t *hash = malloc(n * sizeof(*hash));
		uint8_t *map = malloc(n);

		if (hash && map) {
			populated_map(d.mem, map);
			hash_pages(d.mem, map, hash);
			write_all(to_parent, hash, n * sizeof(*hash));
			write_all(to_parent, map, n);
		}
	}
	_exit(r ? 1 : 0);
}

/* ------------------------------------------------------------ source */

struct src {
	const struct ramlink_opts *o;
	pid_t dst_pid;
	double t0, killed_at;
	struct kvm_mem *mem;
	struct savevm_registry *reg;
	struct ram_handler *ram;
	const struct savevm_ops *ops;
	void *opaque;
	struct savevm_rate rate;
	atomic_bool cancel;
	struct savevm_out out;
	atomic_bool stop_writer;
	struct ring_tls_peer tls_peer;
	const struct ring_tls_peer *tls;	/* NULL: plaintext */
	char err[512];
};

static void *writer_thread(void *arg)
{
	struct src *s = arg;

	s->o->writer(s->mem, s->o->ctx, &s->stop_writer);
	return NULL;
}

static int send_marker(struct src *s, enum stream_rec_type t, uint32_t pass)
{
	uint8_t buf[STREAM_EOF_SIZE];
	struct ram_stats st;
	size_t n;

	if (t == STREAM_REC_PASS_END) {
		n = stream_encode_pass_end(buf, pass);
	} else {
		ram_handler_stats(s->ram, &st);
		n = stream_encode_eof(buf, &(struct stream_eof){ .nr_sections = 1, .nr_pages = st.headers });
	}
	return savevm_out_send(&s->out, buf, n);
}

/* The stream header and the one section, as a VM's stream starts. */
static int send_declarations(struct src *s)
{
	const struct savevm_entry *e = savevm_registry_at(s->reg, 0);
	struct stream_section sec = { .section_id = RAM_SECTION_ID, .instance_id = e->instance_id,
				      .version = e->version, .kind = STREAM_SECTION_ITERABLE };
	uint8_t buf[STREAM_HEADER_SIZE + STREAM_SECTION_MAX_SIZE];
	size_t n = stream_encode_header(buf, &(struct stream_header){ .version = STREAM_VERSION,
								      .page_size = KVM_PAGE_SIZE,
								      .ram_size = kvm_mem_size(s->mem),
								      .nr_vcpus = 1 });

	snprintf(sec.name, sizeof(sec.name), "%s", e->name);
	int r = stream_encode_section(buf + n, sizeof(buf) - n, &sec);

	return r < 0 ? r : savevm_out_send(&s->out, buf, n + (size_t)r);
}

static int open_channels(struct src *s, const struct ring_uri *uri)
{
	struct stream_channels sc = { .nr = s->o->channels, .cookie = 0x6b6d6967ull };
	uint8_t buf[STREAM_CHANNELS_SIZE];

	stream_encode_channels(buf, &sc);
	int r = savevm_out_send(&s->out, buf, sizeof(buf));

	return r ? r
		 : multifd_send_start(&s->out, uri, sc.nr, sc.cookie, s->o->send_mode, s->tls, &s->out.mf, s->err,
				      sizeof(s->err));
}

static int one_pass(struct src *s, uint32_t pass)
{
	int r;

	while ((r = s->ops->save_iterate(s->opaque, &s->out)) == 0)
		;
	if (r < 0)
		return r;
	if (s->out.mf && (r = multifd_send_drain(s->out.mf)))
		return r;
	return send_marker(s, STREAM_REC_PASS_END, pass);
}

/* Live passes with the writer running, then the final pass without it. */
static int src_passes(struct src *s)
{
	pthread_t writer;
	bool writing = false;
	uint32_t pass = 0;
	int r = 0;

	if (s->o->writer)
		writing = !pthread_create(&writer, NULL, writer_thread, s);
	for (unsigned int i = 0; !r && i < (s->o->live_passes ? s->o->live_passes : 1); i++)
		r = one_pass(s, ++pass);
	s->stop_writer = true;
	if (writing)
		pthread_join(writer, NULL);
	if (!r)
		r = s->ops->save_complete(s->opaque, &s->out);
	if (!r && s->out.mf)
		r = multifd_send_finish(s->out.mf);
	return r ? r : send_marker(s, STREAM_REC_EOF, 0);
}

static int src_run(struct src *s, const char *where)
{
	struct ring_uri uri;
	int r = ring_uri_parse(where, &uri, s->err, sizeof(s->err));

	if (!r && s->o->tls_dir && !(r = ramlink_tls(s->o->tls_dir, false, &s->tls_peer, s->err, sizeof(s->err))))
		s->tls = &s->tls_peer;
	if (r)
		return r;
	savevm_rate_init(&s->rate);
	atomic_store(&s->rate.bandwidth, s->o->max_bandwidth);
	s->out = (struct savevm_out){ .rate = &s->rate, .cancel = &s->cancel };
	r = ring_connect(&uri, CONNECT_TIMEOUT_MS, &s->out.ch);
	if (r) {
		snprintf(s->err, sizeof(s->err), "cannot connect to %s: %s", where, strerror(-r));
		return r;
	}
	ring_channel_set_timeout(s->out.ch, s->o->io_timeout_ms);
	if (s->tls && (r = ramlink_secure(&s->out.ch, s->tls, s->err, sizeof(s->err))))
		return r;
	savevm_sendpath_init(&s->out.path, s->out.ch, s->o->send_mode);
	r = send_declarations(s);
	if (!r && s->o->channels)
		r = open_channels(s, &uri);
	if (!r && s->o->silent == RAMLINK_SILENT_SRC) {
		usleep(4000 * (useconds_t)s->o->io_timeout_ms);
		snprintf(s->err, sizeof(s->err), "silent on purpose");
		return -ECANCELED;
	}
	if (!r)
		r = s->ops->save_setup(s->opaque, &s->out, s->err, sizeof(s->err));
	if (!r)
		r = src_passes(s);
	if (r && !s->err[0])
		snprintf(s->err, sizeof(s->err), "%s", strerror(-r));
	return r;
}

static void src_end(struct src *s)
{
	/* channel threads joined before the handler frees what they walk */
	multifd_send_free(s->out.mf);
	s->out.mf = NULL;
	if (s->ops)
		s->ops->save_cleanup(s->opaque);
	ring_channel_close(s->out.ch);
	savevm_rate_destroy(&s->rate);
}

/* ------------------------------------------------------- comparison */

static int compare(struct src *s, int from_child, struct ramlink_result *res)
{
	uint64_t n = kvm_mem_nr_pages(s->mem);
	uint64_t *hash = malloc(n * sizeof(*hash)), *shash = malloc(n * sizeof(*shash));
	uint8_t *dmap = malloc(n), *smap = malloc(n);
	int r = hash && shash && dmap && smap ? 0 : -ENOMEM;

	if (!r && (read_all(from_child, hash, n * sizeof(*hash)) || read_all(from_child, dmap, n)))
		r = -EIO;
	if (!r) {
		populated_map(s->mem, smap);
		hash_pages(s->mem, smap, shash);
		res->first_mismatch = UINT64_MAX;
		for (uint64_t pg = 0; pg < n; pg++) {
			if (hash[pg] != shash[pg]) {
				if (!res->mismatched++)
					res->first_mismatch = pg * KVM_PAGE_SIZE;
			}
			res->dst_populated += dmap[pg];
			res->src_populated += smap[pg];
			res->holes_filled += dmap[pg] && !smap[pg];
		}
	}
	free(hash);
	free(shash);
	free(dmap);
	free(smap);
	if (r)
		snprintf(res->err, sizeof(res->err), "cannot read the destination's pages");
	return r;
}

static void *killer_thread(void *arg)
{
	struct src *s = arg;

	usleep(1000 * (useconds_t)s->o->kill_dst_ms);
	s->killed_at = now_s() - s->t0;
	kill(s->dst_pid, SIGKILL);
	return NULL;
}

static int src_side(const struct ramlink_opts *o, struct src *s, const char *where, int from_child,
		    struct ramlink_result *res)
{
	struct dst_report rep;
	int r = kvm_mem_create(o->mem_bytes, false, &s->mem, s->err, sizeof(s->err));

	if (!r && !(s->reg = savevm_registry_new()))
		r = -ENOMEM;
	if (!r)
		r = ram_handler_register(s->reg, s->mem, NULL, &s->ram);
	if (r)
		goto out;
	s->ops = savevm_registry_at(s->reg, 0)->ops;
	s->opaque = savevm_registry_at(s->reg, 0)->opaque;
	if (o->fill)
		o->fill(s->mem, o->ctx);
	double t0 = now_s(), cpu0 = cpu_s();
	pthread_t killer;
	bool killing = false;

	s->t0 = t0;
	if (o->kill_dst_ms)
		killing = !pthread_create(&killer, NULL, killer_thread, s);
	r = src_run(s, where);
	res->src_status = r;
	res->src_end = now_s() - t0;
	if (killing) {
		pthread_join(killer, NULL);
		res->killed_at = s->killed_at;
	}
	res->src_cpu = cpu_s() - cpu0;
	res->bytes = atomic_load(&s->out.bytes);
	ram_handler_stats(s->ram, &res->src);
	snprintf(res->tls, sizeof(res->tls), "%s",
		 s->out.ch && ring_tls_mode(s->out.ch) ? ring_tls_mode(s->out.ch) : "off");
	if (r)
		ring_channel_abort(s->out.ch);	/* the child sees the end */
	if (read_all(from_child, &rep, sizeof(rep))) {
		snprintf(res->err, sizeof(res->err), "%s%sthe destination died without a report",
			 s->err, s->err[0] ? "; " : "");
		r = r ? r : -EIO;
		goto out;
	}
	res->seconds = rep.done_at - t0;
	res->dst_status = rep.status;
	res->dst_end = rep.done_at - t0;
	res->dst_cpu = rep.cpu;
	res->dst_pages = rep.pages;
	snprintf(res->recv_path, sizeof(res->recv_path), "%s", rep.recv_path);
	if (r || rep.status) {
		snprintf(res->err, sizeof(res->err), "%s%s%s%s", r ? "source: " : "", r ? s->err : "",
			 r && rep.status ? "; destination: " : rep.status ? "destination: " : "",
			 rep.status ? rep.err : "");
		r = r ? r : rep.status;
		goto out;
	}
	r = compare(s, from_child, res);
out:
	if (r && !res->err[0])
		snprintf(res->err, sizeof(res->err), "%s", s->err[0] ? s->err : strerror(-r));
	src_end(s);
	ram_handler_free(s->ram);
	savevm_registry_free(s->reg);
	kvm_mem_destroy(s->mem);
	return r;
}

int ramlink_run(const struct ramlink_opts *o, struct ramlink_result *res)
{
	int p[2];
	char where[300];
	struct src s = { .o = o };

	memset(res, 0, sizeof(*res));
	if (pipe2(p, O_CLOEXEC)) {
		snprintf(res->err, sizeof(res->err), "pipe: %s", strerror(errno));
		return -errno;
	}
	/* the child first, before this process holds threads or RAM */
	pid_t pid = fork();

	if (pid < 0) {
		snprintf(res->err, sizeof(res->err), "fork: %s", strerror(errno));
		return -errno;
	}
	if (pid == 0) {
		close(p[0]);
		dst_main(o, p[1]);
	}
	s.dst_pid = pid;
	close(p[1]);
	int r = read_all(p[0], where, sizeof(where));

	if (!r && !where[0])
		r = -EIO;
	if (r) {
		struct dst_report rep = { 0 };

		read_all(p[0], &rep, sizeof(rep));
		snprintf(res->err, sizeof(res->err), "destination: %s", rep.err[0] ? rep.err : "did not start");
	} else if (o->cut) {
		struct cut_proxy *cp = NULL;
		char via[64];

		r = cut_proxy_start(where, o->cut_conn, o->cut_at, &cp, via, sizeof(via));
		if (r)
			snprintf(res->err, sizeof(res->err), "cut proxy: %s", strerror(-r));
		else
			r = src_side(o, &s, via, p[0], res);
		if (cp)
			res->was_cut = cut_proxy_did_cut(cp);
		cut_proxy_stop(cp);
	} else {
		r = src_side(o, &s, where, p[0], res);
	}
	close(p[0]);
	int status;

	waitpid(pid, &status, 0);
	ring_tls_creds_unref(s.tls_peer.creds);
	return r;
}

unsigned int ramlink_open_fds(void)
{
	unsigned int n = 0;
	char path[64];

	for (int fd = 0; fd < 4096; fd++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n += access(path, F_OK) == 0;
	}
	return n;
}
