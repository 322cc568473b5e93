#!/usr/bin/env bash
# Capture the OPEN and UPDATE messages that BIRD and GoBGP send each other, for the codec's
# byte-vector tests. BIRD (AS 65001) and gobgpd (AS 65002) peer over a veth between two
# network namespaces created here and removed on exit; tcpdump records the session and
# split_pcap.py prints each BGP message as "<sender> <hex>".
#
#   sudo bgp/tests/packet/capture/capture.sh OUT_DIR
#
# Needs: ip (iproute2), bird, birdc, gobgpd, gobgp, tcpdump, python3.
set -euo pipefail

out=${1:?usage: capture.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
for tool in ip bird birdc gobgpd gobgp tcpdump python3; do
    command -v "$tool" >/dev/null || { echo "capture.sh: $tool is required" >&2; exit 1; }
done

tag=codeccap$$
a=${tag}a
b=${tag}b
work=$(mktemp -d)
mkdir -p "$out"

cleanup() {
    set +e
    [[ -f $work/tcpdump.pid ]] && kill "$(cat "$work/tcpdump.pid")" 2>/dev/null
    [[ -f $work/gobgpd.pid ]] && kill "$(cat "$work/gobgpd.pid")" 2>/dev/null
    [[ -f $work/bird.pid ]] && kill "$(cat "$work/bird.pid")" 2>/dev/null
    sleep 0.2
    ip netns del "$a" 2>/dev/null
    ip netns del "$b" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$a"
ip netns add "$b"
ip link add "v$a" type veth peer name "v$b"
ip link set "v$a" netns "$a"
ip link set "v$b" netns "$b"
ip -n "$a" addr add 10.99.0.1/24 dev "v$a"
ip -n "$b" addr add 10.99.0.2/24 dev "v$b"
ip -n "$a" addr add fd00:99::1/64 dev "v$a" nodad
ip -n "$b" addr add fd00:99::2/64 dev "v$b" nodad
for ns in "$a" "$b"; do
    ip -n "$ns" link set lo up
done
ip -n "$a" link set "v$a" up
ip -n "$b" link set "v$b" up

cat >"$work/bird.conf" <<CONF
router id 10.99.0.1;
protocol device {}
protocol static static4 {
    ipv4;
    route 198.51.100.0/24 blackhole { bgp_med = 50; bgp_community.add((65001, 100)); bgp_community.add((65001, 200)); bgp_large_community.add((65001, 1, 2)); };
    route 203.0.113.0/25 blackhole { bgp_path.prepend(64999); bgp_path.prepend(4200000001); };
    route 192.0.2.0/24 blackhole;
}
protocol static static6 {
    ipv6;
    route 2001:db8:100::/48 blackhole { bgp_community.add((65001, 600)); };
    route 2001:db8:200::/64 blackhole;
}
protocol bgp gobgp {
    local 10.99.0.1 as 65001;
    neighbor 10.99.0.2 as 65002;
    hold time 90;
    enable extended messages on;
    graceful restart on;
    ipv4 { import all; export where proto = "static4"; add paths rx; };
    ipv6 { import all; export where proto = "static6"; next hop address fd00:99::1; extended next hop off; };
}
CONF

cat >"$work/gobgp.toml" <<CONF
[global.config]
  as = 65002
  router-id = "10.99.0.2"
  port = 179
  local-address-list = ["10.99.0.2"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.99.0.1"
    peer-as = 65001
  [neighbors.timers.config]
    hold-time = 90
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.add-paths.config]
      send-max = 2
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
CONF

ip netns exec "$a" tcpdump -i "v$a" -U -s 0 -w "$work/bgp.pcap" tcp port 179 2>"$work/tcpdump.log" &
echo $! >"$work/tcpdump.pid"
# tcpdump is ready once it says it is listening.
for _ in $(seq 100); do grep -q listening "$work/tcpdump.log" && break; sleep 0.05; done

ip netns exec "$b" gobgpd -f "$work/gobgp.toml" --api-hosts 127.0.0.1:50099 >"$work/gobgpd.log" 2>&1 &
echo $! >"$work/gobgpd.pid"
for _ in $(seq 100); do ip netns exec "$b" gobgp -p 50099 global >/dev/null 2>&1 && break; sleep 0.1; done
gob() { ip netns exec "$b" gobgp -p 50099 "$@"; }
gob global rib add 100.64.0.0/16 -a ipv4 origin egp med 10 community 65002:1,no-export large-community 65002:3:4
gob global rib add 100.65.0.0/24 -a ipv4 aspath 65010,4200000002 aggregator 4200000002:10.0.0.9
gob global rib add 100.66.0.0/22 -a ipv4 identifier 7
gob global rib add 2001:db8:300::/48 -a ipv6 nexthop fd00:99::2 community 65002:6

ip netns exec "$a" bird -c "$work/bird.conf" -s "$work/bird.ctl" -P "$work/bird.pid"

# Established both ways and the routes across: BIRD holds GoBGP's three IPv4 routes and
# one IPv6 route, GoBGP holds BIRD's three and two.
deadline=$((SECONDS + 30))
until ip netns exec "$a" birdc -s "$work/bird.ctl" show route count 2>/dev/null | grep -q "^[0-9]* of [0-9]* routes for 6 networks" &&
      [[ $(gob global rib -a ipv4 2>/dev/null | grep -c 10.99.0.1) -ge 3 ]] &&
      [[ $(gob global rib -a ipv6 2>/dev/null | grep -c fd00:99::1) -ge 2 ]]; do
    if ((SECONDS > deadline)); then
        echo "capture.sh: routes did not arrive in 30 s" >&2
        ip netns exec "$a" birdc -s "$work/bird.ctl" show protocols all gobgp >&2 || true
        cat "$work/gobgpd.log" >&2
        exit 1
    fi
    sleep 0.2
done
# Withdraw one route each way so the capture also has withdrawals.
gob global rib del 100.66.0.0/22 -a ipv4 identifier 7
ip netns exec "$a" birdc -s "$work/bird.ctl" disable static6 >/dev/null
deadline=$((SECONDS + 10))
until [[ $(gob global rib -a ipv6 2>/dev/null | grep -c fd00:99::1) -eq 0 ]]; do
    ((SECONDS > deadline)) && { echo "capture.sh: withdrawal did not arrive" >&2; exit 1; }
    sleep 0.2
done
sleep 0.5
kill "$(cat "$work/tcpdump.pid")"
wait "$(cat "$work/tcpdump.pid")" 2>/dev/null || true
rm -f "$work/tcpdump.pid"

python3 "$here/split_pcap.py" "$work/bgp.pcap" 10.99.0.1=bird 10.99.0.2=gobgp >"$out/bird-gobgp.hex"
echo "capture.sh: wrote $(wc -l <"$out/bird-gobgp.hex") messages to $out/bird-gobgp.hex"
