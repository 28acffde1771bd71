// Package netfault makes network partitions on this machine's loopback
// interface for tests: Blackhole drops every TCP packet to and from one
// 127.0.0.1 port with iptables (no reset, no answer: what a switch that
// died or a firewall does), and the returned heal function — also run at
// the test's end — removes the rules. It needs root and the iptables
// command; tests skip without them, except under CI, where a missing
// iptables is a failure (.ci/run installs it).
package netfault
