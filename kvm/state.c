/* vCPU and VM device state as self-describing buffers of (u32 tag, u32 len,
 * bytes) items.  Loading is two steps: kvm_state_check() validates every
 * item (known tag, exact length, present exactly once, values in range)
 * without touching KVM, then kvm_state_load() applies it.  The order of
 * ioctls follows what KVM needs: sregs (APIC base) before MSRs, the LAPIC
 * (registered before the cpu entry) before the TSC deadline, mp_state and
 * events last. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "kvm/kvm-int.h"

#define MSR_TSC_DEADLINE 0x6e0
#define MAX_MSRS 256

enum item_tag {
	T_REGS = 1, T_SREGS, T_XSAVE, T_XCRS, T_MSRS, T_EVENTS, T_MP, T_DEBUGREGS,
	T_LAPIC = 16, T_TSC_DEADLINE,
	T_IRQCHIP = 32,
	T_PIT = 48,
	T_CLOCK = 64,
	T_SERIAL = 80,
};

struct item_spec {
	uint32_t tag;
	const char *name;
	uint32_t size;		/* exact size; 0 = variable (checked by hand) */
};

#define ITEM(t, n, s) { t, n, s }
static const struct item_spec cpu_items[] = {
	ITEM(T_REGS, "regs", sizeof(struct kvm_regs)),
	ITEM(T_SREGS, "sregs", sizeof(struct kvm_sregs)),
	ITEM(T_XSAVE, "xsave", sizeof(struct kvm_xsave)),
	ITEM(T_XCRS, "xcrs", sizeof(struct kvm_xcrs)),
	ITEM(T_MSRS, "msrs", 0),
	ITEM(T_MP, "mp-state", sizeof(struct kvm_mp_state)),
	ITEM(T_EVENTS, "vcpu-events", sizeof(struct kvm_vcpu_events)),
	ITEM(T_DEBUGREGS, "debugregs", sizeof(struct kvm_debugregs)),
};
static const struct item_spec apic_items[] = {
	ITEM(T_LAPIC, "lapic", sizeof(struct kvm_lapic_state)),
	ITEM(T_TSC_DEADLINE, "tsc-deadline", sizeof(uint64_t)),
};
static const struct item_spec irqchip_items[] = { ITEM(T_IRQCHIP, "irqchip", sizeof(struct kvm_irqchip)) };
static const struct item_spec pit_items[] = { ITEM(T_PIT, "pit2", sizeof(struct kvm_pit_state2)) };
static const struct item_spec clock_items[] = { ITEM(T_CLOCK, "clock", sizeof(struct kvm_clock_data)) };
static const struct item_spec serial_items[] = { ITEM(T_SERIAL, "16550", sizeof(struct serial16550)) };

struct kind_spec {
	const char *name;
	const struct item_spec *items;
	unsigned int nr_items;
};
#define KIND(n, a) { n, a, sizeof(a) / sizeof(a[0]) }
static const struct kind_spec kinds[] = {
	[KVM_STATE_CPU] = KIND("cpu", cpu_items),
	[KVM_STATE_APIC] = KIND("apic", apic_items),
	[KVM_STATE_PIC] = KIND("pic", irqchip_items),
	[KVM_STATE_IOAPIC] = KIND("ioapic", irqchip_items),
	[KVM_STATE_PIT] = KIND("pit", pit_items),
	[KVM_STATE_KVMCLOCK] = KIND("kvmclock", clock_items),
	[KVM_STATE_SERIAL] = KIND("serial", serial_items),
};

/* ---- writing state records ---- */

struct state_buf {
	uint8_t *buf;
	size_t len, pos;
	int err;
};

static void put_item(struct state_buf *b, uint32_t tag, const void *data, uint32_t len)
{
	if (b->err)
		return;
	if (b->len - b->pos < 8 + (size_t)len) {
		b->err = -ENOSPC;
		return;
	}
	memcpy(b->buf + b->pos, &tag, 4);
	memcpy(b->buf + b->pos + 4, &len, 4);
	memcpy(b->buf + b->pos + 8, data, len);
	b->pos += 8 + len;
}

static int vcpu_get(struct kvm_vcpu *v, unsigned long req, void *data)
{
	return ioctl(v->fd, req, data) < 0 ? -errno : 0;
}

static int save_msrs(struct kvm_vm *vm, struct kvm_vcpu *v, struct state_buf *b)
{
	struct { struct kvm_msrs h; struct kvm_msr_entry e[MAX_MSRS]; } m;

	memset(&m, 0, sizeof(m));
	m.h.nmsrs = vm->nr_msrs;
	for (unsigned int i = 0; i < vm->nr_msrs; i++)
		m.e[i].index = vm->msr_list[i];
	int n = ioctl(v->fd, KVM_GET_MSRS, &m);

	if (n < 0)
		return -errno;
	if ((unsigned int)n != vm->nr_msrs)
		return -EIO;	/* an MSR that read fine at start-up now fails */
	put_item(b, T_MSRS, m.e, vm->nr_msrs * sizeof(m.e[0]));
	return 0;
}

static int save_cpu(struct kvm_vm *vm, struct kvm_vcpu *v, struct state_buf *b)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xsave xsave;
	struct kvm_xcrs xcrs;
	struct kvm_mp_state mp;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dr;
	int r;

	if ((r = vcpu_get(v, KVM_GET_REGS, &regs)) || (r = vcpu_get(v, KVM_GET_SREGS, &sregs)) ||
	    (r = vcpu_get(v, KVM_GET_XSAVE, &xsave)) || (r = vcpu_get(v, KVM_GET_XCRS, &xcrs)) ||
	    (r = vcpu_get(v, KVM_GET_MP_STATE, &mp)) || (r = vcpu_get(v, KVM_GET_VCPU_EVENTS, &ev)) ||
	    (r = vcpu_get(v, KVM_GET_DEBUGREGS, &dr)))
		return r;
	put_item(b, T_REGS, &regs, sizeof(regs));
	put_item(b, T_SREGS, &sregs, sizeof(sregs));
	put_item(b, T_XSAVE, &xsave, sizeof(xsave));
	put_item(b, T_XCRS, &xcrs, sizeof(xcrs));
	if ((r = save_msrs(vm, v, b)))
		return r;
	put_item(b, T_MP, &mp, sizeof(mp));
	put_item(b, T_EVENTS, &ev, sizeof(ev));
	put_item(b, T_DEBUGREGS, &dr, sizeof(dr));
	return 0;
}

static int save_apic(struct kvm_vcpu *v, struct state_buf *b)
{
	struct kvm_lapic_state lapic;
	struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = { .h.nmsrs = 1 };
	int r;

	if ((r = vcpu_get(v, KVM_GET_LAPIC, &lapic)))
		return r;
	m.e.index = MSR_TSC_DEADLINE;
	if (ioctl(v->fd, KVM_GET_MSRS, &m) != 1)
		m.e.data = 0;
	put_item(b, T_LAPIC, &lapic, sizeof(lapic));
	put_item(b, T_TSC_DEADLINE, &m.e.data, sizeof(m.e.data));
	return 0;
}

static uint32_t irqchip_id(enum kvm_state_kind kind, unsigned int instance)
{
	return kind == KVM_STATE_IOAPIC ? KVM_IRQCHIP_IOAPIC
					: (instance ? KVM_IRQCHIP_PIC_SLAVE : KVM_IRQCHIP_PIC_MASTER);
}

static int check_instance(struct kvm_vm *vm, enum kvm_state_kind kind, unsigned int instance)
{
	switch (kind) {
	case KVM_STATE_CPU:
	case KVM_STATE_APIC:
		return instance < vm->nr_vcpus ? 0 : -ENOENT;
	case KVM_STATE_PIC:
		return instance < 2 ? 0 : -ENOENT;
	case KVM_STATE_IOAPIC:
	case KVM_STATE_PIT:
	case KVM_STATE_KVMCLOCK:
	case KVM_STATE_SERIAL:
		return instance == 0 ? 0 : -ENOENT;
	}
	return -EINVAL;
}

int kvm_state_save(struct kvm_vm *vm, enum kvm_state_kind kind, unsigned int instance,
		   uint8_t *buf, size_t len)
{
	struct state_buf b = { .buf = buf, .len = len };
	int r = check_instance(vm, kind, instance);

	if (r)
		return r;
	switch (kind) {
	case KVM_STATE_CPU:
		r = save_cpu(vm, &vm->vcpus[instance], &b);
		break;
	case KVM_STATE_APIC:
		r = save_apic(&vm->vcpus[instance], &b);
		break;
	case KVM_STATE_PIC:
	case KVM_STATE_IOAPIC: {
		struct kvm_irqchip chip = { .chip_id = irqchip_id(kind, instance) };

		if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
			return -errno;
		put_item(&b, T_IRQCHIP, &chip, sizeof(chip));
		break;
	}
	case KVM_STATE_PIT: {
		struct kvm_pit_state2 pit;

		if (ioctl(vm->vm_fd, KVM_GET_PIT2, &pit) < 0)
			return -errno;
		put_item(&b, T_PIT, &pit, sizeof(pit));
		break;
	}
	case KVM_STATE_KVMCLOCK: {
		struct kvm_clock_data c = { 0 };

		if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &c) < 0)
			return -errno;
		put_item(&b, T_CLOCK, &c, sizeof(c));
		break;
	}
	case KVM_STATE_SERIAL:
		pthread_mutex_lock(&vm->serial_lock);
		put_item(&b, T_SERIAL, &vm->serial, sizeof(vm->serial));
		pthread_mutex_unlock(&vm->serial_lock);
		break;
	}
	if (r)
		return r;
	return b.err ? b.err : (int)b.pos;
}

/* ---- reading state records ---- */

struct parsed {
	const uint8_t *data[8];
	uint32_t len[8];
};

static int parse_items(const struct kind_spec *k, const uint8_t *buf, size_t len,
		       struct parsed *p, char *err, size_t errlen)
{
	memset(p, 0, sizeof(*p));
	size_t pos = 0;

	while (pos < len) {
		uint32_t tag, ilen;

		if (len - pos < 8) {
			kmig_set_err(err, errlen, "%s state: torn item header at byte %zu", k->name, pos);
			return -EPROTO;
		}
		memcpy(&tag, buf + pos, 4);
		memcpy(&ilen, buf + pos + 4, 4);
		pos += 8;
		unsigned int i;

		for (i = 0; i < k->nr_items && k->items[i].tag != tag; i++)
			;
		if (i == k->nr_items) {
			kmig_set_err(err, errlen, "%s state: unknown item tag %u", k->name, tag);
			return -EPROTO;
		}
		const struct item_spec *it = &k->items[i];

		if (p->data[i]) {
			kmig_set_err(err, errlen, "%s state: item '%s' appears twice", k->name, it->name);
			return -EPROTO;
		}
		if (ilen > len - pos || (it->size && ilen != it->size)) {
			kmig_set_err(err, errlen, "%s state: item '%s' has length %u (expected %u)",
				     k->name, it->name, ilen, it->size);
			return -EPROTO;
		}
		p->data[i] = buf + pos;
		p->len[i] = ilen;
		pos += ilen;
	}
	for (unsigned int i = 0; i < k->nr_items; i++) {
		if (!p->data[i]) {
			kmig_set_err(err, errlen, "%s state: item '%s' is missing", k->name,
				     k->items[i].name);
			return -EPROTO;
		}
	}
	return 0;
}

static bool msr_known(struct kvm_vm *vm, uint32_t index)
{
	for (unsigned int i = 0; i < vm->nr_msrs; i++)
		if (vm->msr_list[i] == index)
			return true;
	return false;
}

/* Checks beyond the lengths: values KVM would reject half-way through a
 * load, or that do not belong to this machine. */
static int check_values(struct kvm_vm *vm, enum kvm_state_kind kind, unsigned int instance,
			const struct parsed *p, char *err, size_t errlen)
{
	if (kind == KVM_STATE_CPU) {
		uint32_t n = p->len[4] / sizeof(struct kvm_msr_entry);

		if (p->len[4] % sizeof(struct kvm_msr_entry) || n > MAX_MSRS) {
			kmig_set_err(err, errlen, "cpu state: MSR list of %u bytes is malformed", p->len[4]);
			return -EPROTO;
		}
		const struct kvm_msr_entry *e = (const void *)p->data[4];

		for (uint32_t i = 0; i < n; i++) {
			if (!msr_known(vm, e[i].index)) {
				kmig_set_err(err, errlen, "cpu state: MSR 0x%x is not supported here",
					     e[i].index);
				return -EPROTO;
			}
		}
		struct kvm_mp_state mp;
		memcpy(&mp, p->data[5], sizeof(mp));
		if (mp.mp_state > KVM_MP_STATE_AP_RESET_HOLD) {
			kmig_set_err(err, errlen, "cpu state: bad mp_state %u", mp.mp_state);
			return -EPROTO;
		}
	} else if (kind == KVM_STATE_PIC || kind == KVM_STATE_IOAPIC) {
		struct kvm_irqchip chip;

		memcpy(&chip, p->data[0], sizeof(chip));
		if (chip.chip_id != irqchip_id(kind, instance)) {
			kmig_set_err(err, errlen, "%s state: carries chip %u, expected %u",
				     kinds[kind].name, chip.chip_id, irqchip_id(kind, instance));
			return -EPROTO;
		}
	}
	return 0;
}

int kvm_state_check(struct kvm_vm *vm, enum kvm_state_kind kind, unsigned int instance,
		    const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	struct parsed p;

	if ((unsigned int)kind >= sizeof(kinds) / sizeof(kinds[0]) ||
	    check_instance(vm, kind, instance)) {
		kmig_set_err(err, errlen, "no device state slot for instance %u", instance);
		return -ENOENT;
	}
	int r = parse_items(&kinds[kind], buf, len, &p, err, errlen);

	return r ? r : check_values(vm, kind, instance, &p, err, errlen);
}

static int vcpu_set(struct kvm_vcpu *v, unsigned long req, const void *data, const char *what,
		    char *err, size_t errlen)
{
	if (ioctl(v->fd, req, data) < 0) {
		int e = errno;
		kmig_set_err(err, errlen, "vCPU %u: cannot load %s: %s", v->idx, what, strerror(e));
		return -e;
	}
	return 0;
}

static int load_msrs(struct kvm_vcpu *v, const uint8_t *data, uint32_t len, char *err, size_t errlen)
{
	struct { struct kvm_msrs h; struct kvm_msr_entry e[MAX_MSRS]; } m;

	memset(&m, 0, sizeof(m));
	m.h.nmsrs = len / sizeof(struct kvm_msr_entry);
	memcpy(m.e, data, len);
	int n = ioctl(v->fd, KVM_SET_MSRS, &m);

	if (n < 0 || (uint32_t)n != m.h.nmsrs) {
		kmig_set_err(err, errlen, "vCPU %u: KVM refused MSR 0x%x", v->idx,
			     n >= 0 ? m.e[n].index : 0);
		return -EINVAL;
	}
	return 0;
}

static int load_cpu(struct kvm_vcpu *v, const struct parsed *p, char *err, size_t errlen)
{
	int r;

	/* sregs before MSRs: they carry EFER and the APIC base */
	if ((r = vcpu_set(v, KVM_SET_XCRS, p->data[3], "xcrs", err, errlen)) ||
	    (r = vcpu_set(v, KVM_SET_XSAVE, p->data[2], "xsave", err, errlen)) ||
	    (r = vcpu_set(v, KVM_SET_SREGS, p->data[1], "sregs", err, errlen)) ||
	    (r = vcpu_set(v, KVM_SET_REGS, p->data[0], "regs", err, errlen)) ||
	    (r = load_msrs(v, p->data[4], p->len[4], err, errlen)) ||
	    (r = vcpu_set(v, KVM_SET_MP_STATE, p->data[5], "mp_state", err, errlen)) ||
	    (r = vcpu_set(v, KVM_SET_VCPU_EVENTS, p->data[6], "vcpu events", err, errlen)) ||
	    (r = vcpu_set(v, KVM_SET_DEBUGREGS, p->data[7], "debug registers", err, errlen)))
		return r;
	v->has_boot_state = false;	/* the migrated state wins */
	return 0;
}

static int load_apic(struct kvm_vcpu *v, const struct parsed *p, char *err, size_t errlen)
{
	struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = { .h.nmsrs = 1 };
	int r = vcpu_set(v, KVM_SET_LAPIC, p->data[0], "lapic", err, errlen);

	if (r)
		return r;
	m.e.index = MSR_TSC_DEADLINE;
	memcpy(&m.e.data, p->data[1], sizeof(m.e.data));
	if (m.e.data && ioctl(v->fd, KVM_SET_MSRS, &m) != 1) {
		kmig_set_err(err, errlen, "vCPU %u: cannot load the TSC deadline", v->idx);
		return -EINVAL;
	}
	return 0;
}

static int vm_set(struct kvm_vm *vm, unsigned long req, const void *data, const char *what,
		  char *err, size_t errlen)
{
	if (ioctl(vm->vm_fd, req, data) < 0) {
		int e = errno;
		kmig_set_err(err, errlen, "cannot load %s: %s", what, strerror(e));
		return -e;
	}
	return 0;
}

int kvm_state_load(struct kvm_vm *vm, enum kvm_state_kind kind, unsigned int instance,
		   const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	struct parsed p;
	int r = kvm_state_check(vm, kind, instance, buf, len, err, errlen);

	if (r)
		return r;
	parse_items(&kinds[kind], buf, len, &p, NULL, 0);
	switch (kind) {
	case KVM_STATE_CPU:
		return load_cpu(&vm->vcpus[instance], &p, err, errlen);
	case KVM_STATE_APIC:
		return load_apic(&vm->vcpus[instance], &p, err, errlen);
	case KVM_STATE_PIC:
	case KVM_STATE_IOAPIC:
		return vm_set(vm, KVM_SET_IRQCHIP, p.data[0], kinds[kind].name, err, errlen);
	case KVM_STATE_PIT:
		return vm_set(vm, KVM_SET_PIT2, p.data[0], "pit", err, errlen);
	case KVM_STATE_KVMCLOCK: {
		struct kvm_clock_data c;

		memcpy(&c, p.data[0], sizeof(c));
		c.flags = 0;	/* only the clock value carries over */
		return vm_set(vm, KVM_SET_CLOCK, &c, "kvmclock", err, errlen);
	}
	case KVM_STATE_SERIAL:
		pthread_mutex_lock(&vm->serial_lock);
		memcpy(&vm->serial, p.data[0], sizeof(vm->serial));
		pthread_mutex_unlock(&vm->serial_lock);
		return 0;
	}
	return -EINVAL;
}
