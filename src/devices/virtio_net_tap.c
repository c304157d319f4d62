/* virtio-net's TAP side: what a TAP must be, its vnet header, offloads that follow the guest. */
#include "devices/virtio_net_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "util/log.h"

int virtio_net_tap_prepare(int fd, char *ifname, size_t len)
{
	struct ifreq ifr;
	int hdr = VIRTIO_NET_HDR_LEN, fl;
	unsigned none = 0;

	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0)
		return log_errno(-errno, "the NIC's TAP (fd %d): TUNGETIFF (not a TUN/TAP device?)", fd);
	snprintf(ifname, len, "%.*s", IFNAMSIZ - 1, ifr.ifr_name);
	if ((ifr.ifr_flags & (IFF_TAP | IFF_TUN)) != IFF_TAP || !(ifr.ifr_flags & IFF_NO_PI) ||
	    !(ifr.ifr_flags & IFF_VNET_HDR))
		return log_errno(-EINVAL, "the NIC's TAP %s: opened with flags 0x%x; it needs IFF_TAP, "
				 "IFF_NO_PI and IFF_VNET_HDR", ifname, (unsigned)(uint16_t)ifr.ifr_flags);
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0)
		return log_errno(-errno, "the NIC's TAP %s: TUNSETVNETHDRSZ %d", ifname, hdr);
	/* No offloads until a driver accepts them: the TAP hands over only what it could take. */
	if (ioctl(fd, TUNSETOFFLOAD, none) < 0)
		return log_errno(-errno, "the NIC's TAP %s: TUNSETOFFLOAD 0", ifname);
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
		return log_errno(-errno, "the NIC's TAP %s: making it non-blocking", ifname);
	return 0;
}

unsigned virtio_net_tap_offloads(uint64_t f)
{
	unsigned o;

	if (!(f & VIRTIO_NET_F_GUEST_CSUM))
		return 0;
	o = TUN_F_CSUM;
	if (f & VIRTIO_NET_F_GUEST_TSO4)
		o |= TUN_F_TSO4;
	if (f & VIRTIO_NET_F_GUEST_TSO6)
		o |= TUN_F_TSO6;
	if ((f & VIRTIO_NET_F_GUEST_ECN) && (o & (TUN_F_TSO4 | TUN_F_TSO6)))
		o |= TUN_F_TSO_ECN;
	return o;
}

int virtio_net_tap_set_offloads(int fd, const char *ifname, uint64_t driver_features)
{
	unsigned o = virtio_net_tap_offloads(driver_features);

	if (ioctl(fd, TUNSETOFFLOAD, o) < 0)
		return log_errno(-errno, "the NIC's TAP %s: TUNSETOFFLOAD 0x%x", ifname, o);
	log_debug("virtio-net: TAP %s offloads 0x%x (driver features 0x%llx)", ifname, o,
		  (unsigned long long)driver_features);
	return 0;
}

/* virtio 1.x 5.1.3.1: the features each one requires. */
bool virtio_net_features_valid(uint64_t f)
{
	const uint64_t guest_gso = VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6;
	const uint64_t host_gso = VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6;

	if ((f & (guest_gso | VIRTIO_NET_F_GUEST_ECN | VIRTIO_NET_F_GUEST_UFO)) &&
	    !(f & VIRTIO_NET_F_GUEST_CSUM))
		return false;
	if ((f & VIRTIO_NET_F_GUEST_ECN) && !(f & guest_gso))
		return false;
	if ((f & (host_gso | VIRTIO_NET_F_HOST_ECN | VIRTIO_NET_F_HOST_UFO)) && !(f & VIRTIO_NET_F_CSUM))
		return false;
	if ((f & VIRTIO_NET_F_HOST_ECN) && !(f & host_gso))
		return false;
	return !(f & VIRTIO_NET_F_GUEST_ANNOUNCE) || (f & VIRTIO_NET_F_CTRL_VQ);
}
