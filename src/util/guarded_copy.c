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

static void guard_handler(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *env = guard_env;

	(void)uc;
	if (env) {
		guard_env = NULL;
		siglongjmp(*env, 1);
	}
	/* Not ours: the earlier action takes it. A fault repeats on return and is delivered
	 * to that action; a SIGBUS sent by someone is sent again. */
	sigaction(sig, &guard_prev, NULL);
	if (si->si_code <= 0)
		raise(sig);
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

	if (sigsetjmp(env, 1))
		return -EIO;
	guard_env = &env;
	atomic_signal_fence(memory_order_seq_cst); /* the handler sees env before the copy */
	memcpy(dst, src, len);
	atomic_signal_fence(memory_order_seq_cst);
	guard_env = NULL;
	return 0;
}
