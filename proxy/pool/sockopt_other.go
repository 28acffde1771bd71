//go:build !linux

package pool

import "time"

// canWatch says whether stalled can tell: not without TCP_INFO, where
// keepalives alone bound a silent server.
const canWatch = false

func (c *Conn) stalled(time.Time, time.Duration) (time.Duration, bool) { return 0, false }
