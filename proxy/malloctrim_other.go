//go:build !linux || !cgo

package proxy

// releaseCMemory: nothing to do without cgo or glibc.
func releaseCMemory() {}
