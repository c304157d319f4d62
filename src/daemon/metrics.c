/*
 * forkvmd's /v1/metrics: sandboxes by state, per-operation counts and latency histograms, and
 * the page server's gauges and counters (pageserver.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon_impl.h"
#include "util/errmsg.h"

static const double bucket_le[METRIC_BUCKETS] = { 0.001, 0.005, 0.01, 0.05, 0.1, 0.25,
						   0.5,	  1,	 2.5,  5,    30 };

void metrics_observe(struct daemon *d, int op, double seconds, bool failed)
{
	if (op < 0 || op >= d->nops)
		return;
	pthread_mutex_lock(&d->metrics_lock);
	struct op_metric *m = &d->ops[op];
	m->count++;
	m->errors += failed;
	m->sum_s += seconds;
	for (int i = 0; i < METRIC_BUCKETS; i++)
		if (seconds <= bucket_le[i])
			m->buckets[i]++;
	pthread_mutex_unlock(&d->metrics_lock);
}

/* A growing text buffer; on allocation failure it stays NULL and every append is dropped. */
struct text {
	char *buf;
	size_t len, cap;
	bool nomem;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;

	if (t->nomem)
		return;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->nomem = true;
			return;
		}
		if (t->buf && t->len + (size_t)n < t->cap) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = (t->cap ? t->cap : 4096) * 2 + (size_t)n;
		char *p = realloc(t->buf, cap);
		if (!p) {
			t->nomem = true;
			return;
		}
		t->buf = p;
		t->cap = cap;
	}
}

/*
 * The page server's status (queried outside every lock, under its own short deadline): up, its
 * VMs by state, and its per-VM counters summed (zeroes while it is down).
 */
static void render_pageserver(struct daemon *d, struct text *t)
{
	struct pageserver_metrics m;

	pageserver_metrics(d, &m);
	put(t, "# HELP forkvm_pageserver_up Whether the daemon's page server (uffd restores) "
	       "answered its status within 1 s.\n# TYPE forkvm_pageserver_up gauge\n"
	       "forkvm_pageserver_up %d\n", m.up);
	put(t, "# HELP forkvm_pageserver_vms VMs the page server reports, by state (gone: the "
	       "last 256 dropped).\n# TYPE forkvm_pageserver_vms gauge\n");
	for (int s = 0; s < PSV_COUNT; s++)
		put(t, "forkvm_pageserver_vms{state=\"%s\"} %llu\n", pageserver_vm_states[s],
		    (unsigned long long)m.vms[s]);
	for (int c = 0; c < PSC_COUNT; c++)
		put(t, "# HELP forkvm_pageserver_%s_total %s, over its VMs.\n"
		       "# TYPE forkvm_pageserver_%s_total counter\n"
		       "forkvm_pageserver_%s_total %llu\n", pageserver_counters[c].key,
		    pageserver_counters[c].help, pageserver_counters[c].key,
		    pageserver_counters[c].key, (unsigned long long)m.total[c]);
}

int metrics_render(struct daemon *d, char **out, struct api_err *e)
{
	static const char *const states[] = { "running", "paused", "dead" };
	struct sandbox_rec *recs = NULL;
	struct text t = { 0 };
	struct fvm_err err = FVM_ERR_INIT;
	size_t n = 0;

	if (store_list_sandboxes(d->store, NULL, NULL, &recs, &n, &err))
		return api_fail(e, 500, "state", "%s", err_text(&err));
	put(&t, "# HELP forkvm_sandboxes Sandboxes the daemon knows, by state.\n"
		"# TYPE forkvm_sandboxes gauge\n");
	for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			k += strcmp(recs[i].state, states[s]) == 0;
		put(&t, "forkvm_sandboxes{state=\"%s\"} %zu\n", states[s], k);
	}
	free(recs);
	pthread_mutex_lock(&d->metrics_lock);
	put(&t, "# HELP forkvm_api_requests_total API requests answered, by operation.\n"
		"# TYPE forkvm_api_requests_total counter\n");
	for (int i = 0; i < d->nops; i++)
		put(&t, "forkvm_api_requests_total{op=\"%s\"} %llu\n", d->ops[i].name,
		    (unsigned long long)d->ops[i].count);
	put(&t, "# HELP forkvm_api_errors_total API requests answered with an error, by operation.\n"
		"# TYPE forkvm_api_errors_total counter\n");
	for (int i = 0; i < d->nops; i++)
		put(&t, "forkvm_api_errors_total{op=\"%s\"} %llu\n", d->ops[i].name,
		    (unsigned long long)d->ops[i].errors);
	put(&t, "# HELP forkvm_api_rejected_total Requests refused before routing (auth, size, "
		"unknown route).\n# TYPE forkvm_api_rejected_total counter\n"
		"forkvm_api_rejected_total %llu\n", (unsigned long long)d->requests_rejected);
	put(&t, "# HELP forkvm_api_request_seconds Time to answer, by operation.\n"
		"# TYPE forkvm_api_request_seconds histogram\n");
	for (int i = 0; i < d->nops; i++) {
		const struct op_metric *m = &d->ops[i];
		for (int b = 0; b < METRIC_BUCKETS; b++)
			put(&t, "forkvm_api_request_seconds_bucket{op=\"%s\",le=\"%g\"} %llu\n", m->name,
			    bucket_le[b], (unsigned long long)m->buckets[b]);
		put(&t, "forkvm_api_request_seconds_bucket{op=\"%s\",le=\"+Inf\"} %llu\n"
			"forkvm_api_request_seconds_sum{op=\"%s\"} %.6f\n"
			"forkvm_api_request_seconds_count{op=\"%s\"} %llu\n", m->name,
		    (unsigned long long)m->count, m->name, m->sum_s, m->name,
		    (unsigned long long)m->count);
	}
	pthread_mutex_unlock(&d->metrics_lock);
	render_pageserver(d, &t);
	if (t.nomem) {
		free(t.buf);
		return api_fail(e, 500, "internal", "rendering metrics: out of memory");
	}
	*out = t.buf;
	return 0;
}
