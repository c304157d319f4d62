/* guarded_copy: a memcpy into a file mapping that reports SIGBUS as -EIO (guarded_copy.h). */
#include "util/guarded_copy.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned guard_users;
static struct sigaction guard_prev;

/* The copy this thread is inside, if any. */
static __thread sigjmp_buf *guard_env;

/* A SIGBUS outside a guarded copy: what the earlier action would have done. A handler is
 * called as the kernel would have; the default (or ignoring a fault, which would repeat it)
 * ends the process of it, as without the guard. */
static void not_ours(int sig, siginfo_t *si, void *uc)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	if ((guard_prev.sa_flags & SA_SIGINFO) && guard_prev.sa_sigaction) {
		guard_prev.sa_sigaction(sig, si, uc);
		return;
	}
	if (guard_prev.sa_handler == SIG_IGN && si->si_code <= 0)
		return; /* sent, and ignored before the guard: still ignored */
	if (guard_prev.sa_handler != SIG_DFL && guard_prev.sa_handler != SIG_IGN) {
		guard_prev.sa_handler(sig);
		return;
	}
	sigemptyset(&dfl.sa_mask);
	sigaction(sig, &dfl, NULL);
	raise(sig); /* delivered on return (a fault also repeats): the process ends */
}

static void guard_handler(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *env = guard_env;

	if (!env) {
		not_ours(sig, si, uc);
		return;
	}
	guard_env = NULL;
	siglongjmp(*env, 1);
}

int guarded_copy_begin(void)
{
	struct sigaction sa = { .sa_sigaction = guard_handler, .sa_flags = SA_SIGINFO };
	int ret = 0;

	sigemptyset(&sa.sa_mask);
	pthread_mutex_lock(&guard_lock);
	if (guard_users == 0 && sigaction(SIGBUS, &sa, &guard_prev) < 0)
		ret = -errno;
	if (!ret)
		guard_users++;
	pthread_mutex_unlock(&guard_lock);
	return ret;
}

void guarded_copy_end(void)
{
	pthread_mutex_lock(&guard_lock);
	if (guard_users && --guard_users == 0)
		sigaction(SIGBUS, &guard_prev, NULL);
	pthread_mutex_unlock(&guard_lock);
}

int guarded_copy(void *dst, const void *src, size_t len)
{
	sigjmp_buf env;
	sigset_t bus;

	/* No signal mask saved (a system call per copy): the jump leaves SIGBUS blocked, as the
	 * handler ran, and the failure path unblocks it (a fault with it blocked would kill). */
	if (sigsetjmp(env, 0)) {
		sigemptyset(&bus);
		sigaddset(&bus, SIGBUS);
		pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
		return -EIO;
	}
	guard_env = &env;
	atomic_signal_fence(memory_order_seq_cst); /* the handler sees env before the copy */
	memcpy(dst, src, len);
	atomic_signal_fence(memory_order_seq_cst);
	guard_env = NULL;
	return 0;
}
