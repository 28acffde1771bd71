package proxy

import (
	"testing"
	"unsafe"
)

// TestSessionSize keeps the session struct, which every idle (parked)
// client holds, within the allocator's 1024-byte size class on 64-bit
// platforms, counting the 8-byte header the runtime puts before objects
// with pointers larger than 512 bytes (at 1,017 bytes or more a session
// takes 1,152): small fields share words, and rarely used state goes
// behind a pointer allocated on first use (docs/benchmarks.md, idle
// clients).
func TestSessionSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes measured on 64-bit platforms")
	}
	const mallocHeader = 8
	if n := unsafe.Sizeof(session{}); n+mallocHeader > 1024 {
		t.Fatalf("session struct is %d bytes, %d with the allocator's header: more than the 1024-byte size class: order the fields so that small ones share words, or move rarely used ones behind a pointer allocated on first use", n, n+mallocHeader)
	}
}
