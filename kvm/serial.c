/* COM1 as a minimal 16550: enough for a guest that polls LSR and writes
 * THR.  Output goes to the VM's serial_out callback.  The register file is
 * part of the migrated state (serial/0). */
#include <string.h>

#include "kvm/kvm-int.h"

enum { RBR_THR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR };

#define LCR_DLAB 0x80
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define IIR_NO_INT 0x01

void serial_reset(struct serial16550 *s)
{
	memset(s, 0, sizeof(*s));
	s->iir = IIR_NO_INT;
	s->lsr = LSR_THRE | LSR_TEMT;	/* transmitter always ready */
	s->msr = 0xb0;			/* DCD, DSR, CTS */
	s->dll = 12;			/* 9600 baud */
}

static void serial_write(struct kvm_vm *vm, unsigned int reg, uint8_t val)
{
	struct serial16550 *s = &vm->serial;
	bool dlab = s->lcr & LCR_DLAB;

	switch (reg) {
	case RBR_THR:
		if (dlab) {
			s->dll = val;
		} else if (vm->cb.serial_out) {
			char c = (char)val;
			vm->cb.serial_out(vm->cb.opaque, &c, 1);
		}
		break;
	case IER:
		if (dlab)
			s->dlm = val;
		else
			s->ier = val & 0x0f;
		break;
	case IIR_FCR: s->fcr = val; break;
	case LCR: s->lcr = val; break;
	case MCR: s->mcr = val & 0x1f; break;
	case SCR: s->scr = val; break;
	default: break;	/* LSR/MSR are read-only */
	}
}

static uint8_t serial_read(struct kvm_vm *vm, unsigned int reg)
{
	struct serial16550 *s = &vm->serial;
	bool dlab = s->lcr & LCR_DLAB;

	switch (reg) {
	case RBR_THR: return dlab ? s->dll : 0;	/* no input */
	case IER: return dlab ? s->dlm : s->ier;
	case IIR_FCR: return s->iir | ((s->fcr & 1) ? 0xc0 : 0);
	case LCR: return s->lcr;
	case MCR: return s->mcr;
	case LSR: return s->lsr;
	case MSR: return s->msr;
	case SCR: return s->scr;
	default: return 0xff;
	}
}

void serial_io(struct kvm_vm *vm, uint16_t port, bool is_write, uint8_t *data)
{
	unsigned int reg = port - SERIAL_PORT;

	pthread_mutex_lock(&vm->serial_lock);
	if (is_write)
		serial_write(vm, reg, *data);
	else
		*data = serial_read(vm, reg);
	pthread_mutex_unlock(&vm->serial_lock);
}
