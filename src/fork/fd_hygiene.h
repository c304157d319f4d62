/* After fork(): drop every inherited fd and mapping a forked VMM must not hold. */
#ifndef FORKVM_FD_HYGIENE_H
#define FORKVM_FD_HYGIENE_H

struct vm;

/* Close every fd except stdin/out/err and the ones listed (n of them). */
int fds_close_except(const int *keep, int n);
/* Unmap the vCPUs' kvm_run pages and forget the VM's KVM fds (KVM refuses them across fork). */
void vm_forget_kvm(struct vm *vm);

#endif
