/* Page-server replies: the registration ack and per-VM status counters as JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "util/log.h"
#include "uffd/ps_server.h"
#include "util/clock.h"

static json_t *us_since(uint64_t t, uint64_t since)
{
	return t ? json_integer((json_int_t)((t - since) / 1000)) : json_null();
}

static const char *phase_name(const struct ps_vm *vm)
{
	if (vm->gone)
		return "gone";
	return vm->phase == PS_HOT ? "hot" : vm->phase == PS_BACKGROUND ? "background" :
	       vm->phase == PS_LOAD ? "loading" : "idle";
}

json_t *ps_vm_status(const struct ps_vm *vm)
{
	json_t *o = json_pack("{s:i,s:s,s:i,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b}",
			      "id", vm->id, "name", vm->reg.name, "pid", vm->reg.pid,
			      "snapshot", vm->reg.snapshot, "state", phase_name(vm),
			      "mem_bytes", (json_int_t)vm->reg.size,
			      "demand_faults", (json_int_t)vm->demand_faults,
			      "zero_faults", (json_int_t)vm->zero_faults,
			      "pages_prefetched", (json_int_t)vm->pages_prefetched,
			      "bytes_copied", (json_int_t)vm->bytes_copied,
			      "eexist", (json_int_t)vm->eexist, "eagain", (json_int_t)vm->eagain,
			      "events_remove", (json_int_t)vm->events_remove,
			      "hot_pages", (json_int_t)vm->nhot, "recording", vm->recording);

	if (!o)
		return NULL;
	json_object_set_new(o, "access_log_pages", json_integer((json_int_t)vm->norder));
	json_object_set_new(o, "sequential", json_boolean(vm->sequential));
	json_object_set_new(o, "first_fault_us", us_since(vm->t_first_fault, vm->t_register));
	json_object_set_new(o, "settle_us", us_since(vm->t_settle, vm->t_register));
	json_object_set_new(o, "ack_us", us_since(vm->t_acked, vm->t_register));
	if (vm->prefetch_note[0])
		json_object_set_new(o, "prefetch_note", json_string(vm->prefetch_note));
	if (vm->record_result[0])
		json_object_set_new(o, "record_result", json_string(vm->record_result));
	if (vm->gone)
		json_object_set_new(o, "dropped", json_string(vm->why));
	return o;
}

/* One reply line to the VMM waiting for its ack; a VMM that stopped reading is dropped. */
static void send_line(struct ps_vm *vm, json_t *o, const char *what)
{
	char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	size_t len;

	json_decref(o);
	if (!line) {
		log_err("vm %d: building the %s: out of memory", vm->id, what);
		vm->conn->dead = true;
		return;
	}
	/* Small reply on an idle socket. */
	len = strlen(line);
	line[len] = '\n';
	if (send(vm->conn->fd, line, len + 1, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)(len + 1)) {
		log_warn("vm %d (%s): sending the %s failed: %s", vm->id, vm->reg.name, what,
			 strerror(errno));
		vm->conn->dead = true;
	}
	free(line);
}

void ps_send_ack(struct ps_vm *vm)
{
	json_t *o;

	if (vm->t_acked || !vm->conn)
		return;
	vm->t_acked = monotonic_ns();
	o = json_pack("{s:b,s:i,s:I,s:I,s:I}", "ok", 1, "vm", vm->id,
		      "hot_pages", (json_int_t)vm->nhot,
		      "pages_prefetched", (json_int_t)vm->pages_prefetched,
		      "prefetch_us", (json_int_t)((vm->t_acked - vm->t_register) / 1000));
	if (o && vm->prefetch_note[0])
		json_object_set_new(o, "note", json_string(vm->prefetch_note));
	send_line(vm, o, "ack");
}

void ps_send_refusal(struct ps_vm *vm, const char *error)
{
	if (vm->t_acked || !vm->conn)
		return;
	vm->t_acked = monotonic_ns(); /* answered: no ack may follow */
	send_line(vm, json_pack("{s:b,s:s}", "ok", 0, "error", error), "refusal");
}
