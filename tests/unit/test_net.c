/* net/net_opts.c: the network options' strings, their precise errors and the checks across
 * options; the guest's kernel argument and MAC. No namespace is made here (test_net_host.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "net/net.h"
#include "util/errmsg.h"

static struct fvm_err err = FVM_ERR_INIT;

static void test_defaults(void **state)
{
	struct net_opts o;
	char arg[96];

	(void)state;
	net_opts_init(&o);
	assert_int_equal(o.mode, NET_NONE);
	assert_int_equal(o.guest_addr, 0x0afe0002);
	assert_int_equal(o.gateway, 0x0afe0001);
	assert_int_equal(o.guest_prefix, 24);
	assert_int_equal(o.mtu, 1500);
	assert_int_equal(net_opts_finish(&o, &err), 0);
	assert_int_equal(net_kernel_arg(&o, arg, sizeof(arg)), 0);
	assert_string_equal(arg, "forkvm.net=10.254.0.2/24,10.254.0.1,1500");
	assert_int_equal(net_kernel_arg(&o, arg, 10), -ENAMETOOLONG);
}

static void test_mode(void **state)
{
	struct net_opts o;

	(void)state;
	net_opts_init(&o);
	assert_int_equal(net_opts_mode(&o, "nat", &err), 0);
	assert_int_equal(o.mode, NET_NAT);
	assert_int_equal(net_opts_mode(&o, "isolated", &err), 0);
	assert_int_equal(o.mode, NET_ISOLATED);
	assert_int_equal(net_opts_mode(&o, "off", &err), 0);
	assert_int_equal(o.mode, NET_NONE);
	assert_int_equal(net_opts_mode(&o, "bridge", &err), -EINVAL);
	assert_string_equal(err.msg, "--net 'bridge': need none, isolated or nat");
}

static void test_publish(void **state)
{
	struct net_opts o;

	(void)state;
	net_opts_init(&o);
	assert_int_equal(net_opts_publish(&o, "8080:80", &err), 0);
	assert_int_equal(o.publish[0].host_ip, 0x7f000001);
	assert_int_equal(o.publish[0].host_port, 8080);
	assert_int_equal(o.publish[0].guest_port, 80);
	assert_int_equal(net_opts_publish(&o, "0.0.0.0:0:22", &err), 0);
	assert_int_equal(o.publish[1].host_ip, 0);
	assert_int_equal(o.publish[1].host_port, 0);
	assert_int_equal(net_opts_publish(&o, "0:22", &err), 0); /* 0 twice is fine */
	assert_int_equal(net_opts_publish(&o, "80", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "need [IP:]HOSTPORT:GUESTPORT"));
	assert_int_equal(net_opts_publish(&o, "8081:0", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "guest port '0' is not 1-65535"));
	assert_int_equal(net_opts_publish(&o, "65536:1", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "host port '65536' is not 0-65535"));
	assert_int_equal(net_opts_publish(&o, "+1:1", &err), -EINVAL);
	assert_int_equal(net_opts_publish(&o, "1.2.3:1:1", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "'1.2.3' is not an IPv4 address"));
	assert_int_equal(net_opts_publish(&o, ":1:1", &err), -EINVAL);
	/* The same host port on the same address, or on any address, is one socket twice. */
	assert_int_equal(net_opts_publish(&o, "127.0.0.1:8080:81", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "host port 8080 is published twice"));
	assert_int_equal(net_opts_publish(&o, "0.0.0.0:8080:81", &err), -EINVAL);
	assert_int_equal(net_opts_publish(&o, "10.0.0.1:8081:81", &err), 0);
	assert_int_equal(o.npublish, 4);
	for (int i = o.npublish; i < NET_MAX_PUBLISH; i++)
		assert_int_equal(net_opts_publish(&o, "0:1", &err), 0);
	assert_int_equal(net_opts_publish(&o, "0:1", &err), -ENOSPC);
}

static void test_cidrs(void **state)
{
	struct net_opts o;

	(void)state;
	net_opts_init(&o);
	assert_int_equal(net_opts_cidr(&o, true, "192.0.2.0/24", &err), 0);
	assert_int_equal(o.allow[0].addr, 0xc0000200);
	assert_int_equal(o.allow[0].prefix, 24);
	assert_int_equal(net_opts_cidr(&o, false, "198.51.100.7", &err), 0);
	assert_int_equal(o.deny[0].prefix, 32);
	assert_int_equal(net_opts_cidr(&o, false, "0.0.0.0/0", &err), 0);
	assert_int_equal(net_opts_cidr(&o, true, "10.1.2.3/8", &err), -EINVAL);
	assert_string_equal(err.msg,
			    "--allow '10.1.2.3/8': host bits set after the /8 prefix (did you "
				 "mean 10.0.0.0/8?)");
	const char *bad[] = { "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "300.0.0.1", "", "/8",
			      "10.0.0.0/-1", "::1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(net_opts_cidr(&o, false, bad[i], &err), -EINVAL);
		assert_non_null(strstr(err.msg, "need an IPv4 address or prefix"));
	}
	/* Lists need nat. */
	assert_int_equal(net_opts_finish(&o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "needs --net nat (the mode is none)"));
	o.mode = NET_NAT;
	assert_int_equal(net_opts_finish(&o, &err), 0);
}

static void test_address_and_mtu(void **state)
{
	struct net_opts o;

	(void)state;
	net_opts_init(&o);
	assert_int_equal(net_opts_address(&o, "192.168.9.5/24", &err), 0);
	assert_int_equal(o.gateway, 0xc0a80901);
	assert_int_equal(net_opts_finish(&o, &err), 0);
	assert_int_equal(net_opts_address(&o, "192.168.9.5/24,192.168.9.254", &err), 0);
	assert_int_equal(o.gateway, 0xc0a809fe);
	assert_int_equal(net_opts_address(&o, "192.168.9.5", &err), -EINVAL);
	assert_int_equal(net_opts_address(&o, "192.168.9.5/31", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "/8 to /30"));
	assert_int_equal(net_opts_address(&o, "192.168.9.5/24,x", &err), -EINVAL);
	/* Checked across options: gateway in the subnet, not the guest, not network/broadcast;
	 * the subnet clear of the pool. */
	assert_int_equal(net_opts_address(&o, "192.168.9.5/24,192.168.8.1", &err), 0);
	assert_int_equal(net_opts_finish(&o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "another address of the guest's subnet"));
	assert_int_equal(net_opts_address(&o, "192.168.9.5/24,192.168.9.5", &err), 0);
	assert_int_equal(net_opts_finish(&o, &err), -EINVAL);
	assert_int_equal(net_opts_address(&o, "192.168.9.255/24,192.168.9.1", &err), 0);
	assert_int_equal(net_opts_finish(&o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "network or broadcast"));
	assert_int_equal(net_opts_address(&o, "10.253.200.2/24", &err), 0);
	assert_int_equal(net_opts_finish(&o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "overlaps the host-side pool"));
	assert_int_equal(net_opts_address(&o, "10.2.0.2/8", &err), 0);
	assert_int_equal(net_opts_finish(&o, &err), -EINVAL); /* 10/8 holds the pool */
	assert_int_equal(net_opts_mtu(&o, "9000", &err), 0);
	assert_int_equal(o.mtu, 9000);
	assert_int_equal(net_opts_mtu(&o, "67", &err), -EINVAL);
	assert_int_equal(net_opts_mtu(&o, "65536", &err), -EINVAL);
	assert_int_equal(net_opts_mtu(&o, "-1", &err), -EINVAL);
	assert_int_equal(net_opts_mtu(&o, "", &err), -EINVAL);
}

static void test_publish_alone_means_isolated(void **state)
{
	struct net_opts o;

	(void)state;
	net_opts_init(&o);
	assert_int_equal(net_opts_publish(&o, "0:80", &err), 0);
	assert_int_equal(net_opts_finish(&o, &err), 0);
	assert_int_equal(o.mode, NET_ISOLATED);
}

static void test_random_mac(void **state)
{
	uint8_t a[6], b[6];

	(void)state;
	net_random_mac(a);
	net_random_mac(b);
	assert_int_equal(a[0] & 3, 2); /* unicast, locally administered */
	assert_int_equal(b[0] & 3, 2);
	assert_memory_not_equal(a, b, 6);
}

static void test_inactive_status(void **state)
{
	json_t *st = net_status_json(NULL);

	(void)state;
	assert_string_equal(json_string_value(json_object_get(st, "mode")), "none");
	json_decref(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_mode),
		cmocka_unit_test(test_publish),
		cmocka_unit_test(test_cidrs),
		cmocka_unit_test(test_address_and_mtu),
		cmocka_unit_test(test_publish_alone_means_isolated),
		cmocka_unit_test(test_random_mac),
		cmocka_unit_test(test_inactive_status),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
