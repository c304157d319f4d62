/* A descriptor that turns readable while a stop signal (TERM, INT, HUP) is pending. */
#ifndef FORKVM_CORE_STOPFD_H
#define FORKVM_CORE_STOPFD_H

/*
 * A non-blocking signalfd for SIGTERM, SIGINT and SIGHUP, to poll beside a long wait
 * (a handshake, a fix-up) so the wait can give up. Only poll it: reading would consume the
 * signal, which must stay pending for whoever handles it (the control loop). The signals
 * must be blocked in the calling thread, as the VMM does. Returns the fd or -errno.
 */
int stop_signal_fd(void);

#endif
