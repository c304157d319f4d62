# Host networking of VMs (src/net/, docs/NET.md): rtnetlink through libmnl, packet rules
# through libnftables (Debian: libmnl-dev, libnftables-dev; nftables for the nft tool the
# tests read rules with).
LDLIBS += -lnftables -lmnl
