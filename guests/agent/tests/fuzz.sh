#!/usr/bin/env bash
# Bounded libFuzzer run over the agent's frame parser: fuzz.sh [SECONDS] (default 20).
# Builds the harness (make fuzz-agent), writes a small seed corpus, fuzzes, fails on a crash.
set -euo pipefail
cd "$(dirname "$0")/../../.."
secs=${1:-20}
out=build/fuzz
make -s fuzz-agent BUILD=build
mkdir -p "$out/seeds" "$out/corpus" "$out/artifacts"

# seed NAME STEP PAYLOAD: one input = read-size byte, 4-byte big-endian length, payload.
seed() {
	local len=${#3}
	{
		printf "\\x$(printf %02x "$2")"
		printf "\\x$(printf %02x $((len >> 24 & 255)))\\x$(printf %02x $((len >> 16 & 255)))"
		printf "\\x$(printf %02x $((len >> 8 & 255)))\\x$(printf %02x $((len & 255)))"
		printf '%s' "$3"
	} >"$out/seeds/$1"
}
seed ping 0 '{"op":"ping","id":1}'
seed exec 3 '{"op":"exec","argv":["sh","-c","echo hi"],"env":{"A":"1"},"cwd":"/tmp","stdin":"aGk=","stdin_base64":true,"timeout_ms":100,"max_output":10,"output_encoding":"base64"}'
seed exec_env_array 7 '{"op":"exec","argv":["env"],"env":["A=1","B=2=3"],"clear_env":true}'
seed write_file 1 '{"op":"write_file","path":"/tmp/x","content":"AAEC/w==","mode":420,"atomic":false}'
seed read_file 0 '{"op":"read_file","path":"/etc/hostname","max_bytes":10}'
seed set_clock 0 '{"op":"set_clock","time_ns":1700000000000000000}'
seed reseed 2 '{"op":"reseed_entropy","data":"AAECAw==","entropy_bits":8}'
seed shutdown 0 '{"op":"shutdown","mode":"reboot","id":"x"}'
seed eval 2 '{"op":"eval","lang":"python","code":"x = 41","timeout_ms":500,"context":"c1","max_output":100,"output_encoding":"auto"}'
seed eval_close 0 '{"op":"eval_close","context":"c1"}'
seed put_tree 1 '{"op":"put_tree","path":"/tmp/d","data":"AAEC"}'
seed get_tree 0 '{"op":"get_tree","path":"/etc","max_bytes":1024}'
seed malformed 0 '{"op":"ping",'
seed unknown 0 '{"op":"fly","id":[1,{"a":null}]}'
printf '\x00\xff\xff\xff\xff' >"$out/seeds/oversized"
printf '\x05\x00\x00\x00\x02{}\x00\x00\x00\x10{"op":"ping"}xx' >"$out/seeds/pipelined"

exec "$out/fuzz_agent_frame" "$out/corpus" "$out/seeds" -max_total_time="$secs" \
	-max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-artifact_prefix="$out/artifacts/"
