//go:build !linux

package pool

import "time"

// setUserTimeout does nothing where TCP_USER_TIMEOUT does not exist:
// keepalives alone bound a silent server there.
func setUserTimeout(uintptr, time.Duration) error { return nil }
