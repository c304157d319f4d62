/* A descriptor that turns readable while a stop signal (TERM, INT, HUP) is pending. */
#include "util/stopfd.h"

#include <errno.h>
#include <signal.h>
#include <sys/signalfd.h>

int stop_signal_fd(void)
{
	sigset_t sigs;
	int fd;

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	return fd < 0 ? -errno : fd;
}
