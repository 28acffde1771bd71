package pool

import (
	"time"

	"golang.org/x/sys/unix"
)

// canWatch says whether stalled can tell.
const canWatch = true

// maxProbeInterval is TCP's longest interval between window probes
// (TCP_RTO_MAX).
const maxProbeInterval = 120 * time.Second

// stalled reports whether c has had something to deliver (data in flight,
// or probes out: window probes to a server that does not read, keepalive
// probes) without receiving any segment from the server for at least
// timeout — plus, while TCP only probes a closed window, the interval
// until its next probe (probes back off exponentially, and a server that
// is alive answers each) — and for how long. Only the pool's watchdog
// calls it.
func (c *Conn) stalled(now time.Time, timeout time.Duration) (time.Duration, bool) {
	tc := tcpConn(c.NetConn)
	if tc == nil {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || ierr != nil {
		return 0, false
	}
	w := &c.watch
	if info.Segs_in != w.segsIn || w.heardAt.IsZero() {
		w.segsIn, w.heardAt = info.Segs_in, now
	}
	if info.Unacked == 0 && info.Probes == 0 {
		w.waitingSince = time.Time{}
		return 0, false
	}
	if w.waitingSince.IsZero() {
		w.waitingSince = now
	}
	allowance := timeout
	if info.Unacked == 0 {
		rto := time.Duration(info.Rto) * time.Microsecond
		allowance += min(rto<<min(info.Backoff, 16), maxProbeInterval)
	}
	from := w.waitingSince
	if w.heardAt.After(from) {
		from = w.heardAt
	}
	silent := now.Sub(from)
	return silent, silent >= allowance
}
