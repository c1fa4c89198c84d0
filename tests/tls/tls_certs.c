/* tests/tls/tls_certs.c — throwaway X.509 CAs and certificates for the TLS
 * tests, made at test time with GnuTLS (no key is in the tree).  See
 * tls_certs.h; `tls-certs DIR` (tls_certs_main.c) lays out the standard set
 * for the Python tests and bench. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "tests/tls/tls_certs.h"

static int write_datum(const char *dir, const char *name, const gnutls_datum_t *d)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (!(f = fopen(path, "w")))
		return -errno;
	size_t n = fwrite(d->data, 1, d->size, f);
	int r = fclose(f);

	return n == d->size && !r ? 0 : -EIO;
}

static int read_datum(const char *dir, const char *name, gnutls_datum_t *d)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return gnutls_load_file(path, d) < 0 ? -ENOENT : 0;
}

static int export_key(gnutls_x509_privkey_t key, const char *dir, const char *name)
{
	gnutls_datum_t d;
	int r = gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &d);

	if (r < 0)
		return -EIO;
	r = write_datum(dir, name, &d);
	gnutls_free(d.data);
	return r;
}

static int export_crt(gnutls_x509_crt_t crt, const char *dir, const char *name)
{
	gnutls_datum_t d;
	int r = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &d);

	if (r < 0)
		return -EIO;
	r = write_datum(dir, name, &d);
	gnutls_free(d.data);
	return r;
}

/* The CA of issuer_dir (ca-cert.pem, ca-key.pem). */
static int load_ca(const char *issuer_dir, gnutls_x509_crt_t *crt, gnutls_x509_privkey_t *key)
{
	gnutls_datum_t c = { 0 }, k = { 0 };
	int r = read_datum(issuer_dir, "ca-cert.pem", &c);

	if (!r)
		r = read_datum(issuer_dir, "ca-key.pem", &k);
	if (!r && (gnutls_x509_crt_init(crt) < 0 || gnutls_x509_crt_import(*crt, &c, GNUTLS_X509_FMT_PEM) < 0))
		r = -EINVAL;
	if (!r && (gnutls_x509_privkey_init(key) < 0 ||
		   gnutls_x509_privkey_import(*key, &k, GNUTLS_X509_FMT_PEM) < 0))
		r = -EINVAL;
	gnutls_free(c.data);
	gnutls_free(k.data);
	return r;
}

static int fill_crt(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, const struct tls_cert_spec *s)
{
	static unsigned int serial;
	unsigned char sn[8];
	time_t now = time(NULL);
	int r = 0;

	serial++;
	memcpy(sn, &(uint64_t){ (uint64_t)now << 16 | serial }, sizeof(sn));
	sn[0] &= 0x7f;
	r |= gnutls_x509_crt_set_version(crt, 3);
	r |= gnutls_x509_crt_set_serial(crt, sn, sizeof(sn));
	r |= gnutls_x509_crt_set_key(crt, key);
	r |= gnutls_x509_crt_set_activation_time(crt, now + s->valid_from);
	r |= gnutls_x509_crt_set_expiration_time(crt, now + s->valid_until);
	if (s->org)
		r |= gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, s->org, strlen(s->org));
	r |= gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, s->cn, strlen(s->cn));
	r |= gnutls_x509_crt_set_basic_constraints(crt, s->ca, -1);
	if (s->ca) {
		r |= gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN);
	} else {
		r |= gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_ENCIPHERMENT);
		r |= gnutls_x509_crt_set_key_purpose_oid(crt, s->server ? GNUTLS_KP_TLS_WWW_SERVER
									: GNUTLS_KP_TLS_WWW_CLIENT, 0);
	}
	if (s->dns)
		r |= gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, s->dns, strlen(s->dns),
							  GNUTLS_FSAN_APPEND);
	if (s->ip) {
		unsigned char a[16];
		bool v6 = strchr(s->ip, ':');

		if (inet_pton(v6 ? AF_INET6 : AF_INET, s->ip, a) == 1)
			r |= gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, a, v6 ? 16 : 4,
								  GNUTLS_FSAN_APPEND);
	}
	return r < 0 ? -EINVAL : 0;
}

int tls_make_cert(const char *dir, const char *issuer_dir, const char *prefix, const struct tls_cert_spec *s)
{
	gnutls_x509_privkey_t key = NULL, ca_key = NULL;
	gnutls_x509_crt_t crt = NULL, ca = NULL;
	char name[64];
	int r;

	gnutls_global_init();
	mkdir(dir, 0700);
	r = gnutls_x509_privkey_init(&key) < 0 || gnutls_x509_crt_init(&crt) < 0 ? -ENOMEM : 0;
	if (!r && gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
					       0) < 0)
		r = -EIO;
	if (!r)
		r = fill_crt(crt, key, s);
	if (!r && issuer_dir)
		r = load_ca(issuer_dir, &ca, &ca_key);
	if (!r && gnutls_x509_crt_sign2(crt, ca ? ca : crt, ca_key ? ca_key : key, GNUTLS_DIG_SHA256, 0) < 0)
		r = -EIO;
	snprintf(name, sizeof(name), "%s-cert.pem", prefix);
	if (!r)
		r = export_crt(crt, dir, name);
	snprintf(name, sizeof(name), "%s-key.pem", prefix);
	if (!r)
		r = export_key(key, dir, name);
	if (ca)
		gnutls_x509_crt_deinit(ca);
	if (ca_key)
		gnutls_x509_privkey_deinit(ca_key);
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
	return r;
}

int tls_copy_ca(const char *from_dir, const char *to_dir)
{
	gnutls_datum_t d = { 0 };
	int r = read_datum(from_dir, "ca-cert.pem", &d);

	mkdir(to_dir, 0700);
	if (!r)
		r = write_datum(to_dir, "ca-cert.pem", &d);
	gnutls_free(d.data);
	return r;
}

/* A CA, and a server and a client it signed; days of validity. */
static const struct tls_cert_spec ca_spec = { .cn = "kmig test CA", .ca = true, .valid_from = -3600,
					      .valid_until = 86400 };

int tls_make_set(const char *root)
{
	char ca[4096], other[4096], d[4096];
	const struct tls_cert_spec server = { .cn = TLS_SERVER_CN, .org = "kmig", .server = true, .dns = "localhost",
					      .ip = "127.0.0.1", .valid_from = -3600, .valid_until = 86400 };
	const struct tls_cert_spec client = { .cn = TLS_CLIENT_CN, .org = "kmig", .valid_from = -3600,
					      .valid_until = 86400 };
	struct tls_cert_spec expired = server;
	int r;

	expired.valid_from = -7200;
	expired.valid_until = -3600;
	mkdir(root, 0700);
	snprintf(ca, sizeof(ca), "%s/ca", root);
	snprintf(other, sizeof(other), "%s/other-ca", root);
	struct tls_cert_spec other_spec = ca_spec;

	other_spec.cn = "another CA";
	r = tls_make_cert(ca, NULL, "ca", &ca_spec);
	if (!r)
		r = tls_make_cert(other, NULL, "ca", &other_spec);
#define DIR(name) (snprintf(d, sizeof(d), "%s/%s", root, name), d)
	/* the good pair */
	if (!r && !(r = tls_copy_ca(ca, DIR("server"))))
		r = tls_make_cert(d, ca, "server", &server);
	if (!r && !(r = tls_copy_ca(ca, DIR("client"))))
		r = tls_make_cert(d, ca, "client", &client);
	/* a client with no certificate: it trusts the CA only */
	if (!r)
		r = tls_copy_ca(ca, DIR("client-nocert"));
	/* each side signed by another CA, trusting the real one */
	if (!r && !(r = tls_copy_ca(ca, DIR("client-other-ca"))))
		r = tls_make_cert(d, other, "client", &client);
	if (!r && !(r = tls_copy_ca(ca, DIR("server-other-ca"))))
		r = tls_make_cert(d, other, "server", &server);
	/* an expired server certificate of the real CA */
	if (!r && !(r = tls_copy_ca(ca, DIR("server-expired"))))
		r = tls_make_cert(d, ca, "server", &expired);
#undef DIR
	return r;
}
