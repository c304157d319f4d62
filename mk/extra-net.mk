# Host networking of VMs (src/net/, docs/NET.md): rtnetlink through libmnl, packet rules
# through libnftables, opened at run time (dlopen: net_nft.c says why; its header comes from
# libnftables-dev, the library from libnftables1) (Debian: libmnl-dev, libnftables-dev;
# nftables for the nft tool the tests read rules with).
LDLIBS += -lmnl
