//go:build linux && cgo

package proxy

// #include <malloc.h>
import "C"

// releaseCMemory returns the C allocator's free memory to the system
// (glibc's malloc_trim, every arena): the SQL parser (pg_query, in C)
// allocates through it on whichever threads run the parse, and each
// thread may get an arena of its own.
func releaseCMemory() { C.malloc_trim(0) }
