package proxy

import (
	"testing"
	"unsafe"
)

// TestSessionSize keeps the session struct, which every idle (parked)
// client holds, within the allocator's 1152-byte size class on 64-bit
// platforms: rarely used state goes behind a pointer allocated on first
// use (docs/benchmarks.md, idle clients).
func TestSessionSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes measured on 64-bit platforms")
	}
	if n := unsafe.Sizeof(session{}); n > 1152 {
		t.Fatalf("session struct is %d bytes, more than the 1152-byte size class: move rarely used fields behind a lazily allocated pointer", n)
	}
}
