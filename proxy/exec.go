package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/wire"
)

// simpleExec runs sql on an idle backend with the simple protocol and
// waits for ReadyForQuery, discarding results. It is for the proxy's own
// statements (session parameter replay, reset); the backend must not be
// attached to a relay.
func simpleExec(ctx context.Context, be *pool.Conn, sql string) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = be.NetConn.SetDeadline(dl)
		defer be.NetConn.SetDeadline(time.Time{})
	}
	msg := make([]byte, 5, 6+len(sql))
	msg[0] = 'Q'
	msg = append(msg, sql...)
	msg = append(msg, 0)
	binary.BigEndian.PutUint32(msg[1:], uint32(len(msg)-1))
	if _, err := be.NetConn.Write(msg); err != nil {
		return fmt.Errorf("send query: %w", err)
	}
	var firstErr error
	for {
		typ, frame, err := be.Reader.Next()
		if err != nil {
			return fmt.Errorf("read reply: %w", err)
		}
		switch typ {
		case 'E':
			if firstErr == nil {
				firstErr = &wire.Error{
					Code:    wire.ErrorCode(frame),
					Message: wire.ErrorField(frame, 'M'),
				}
			}
		case 'Z':
			if len(frame) > wire.HeaderLen && frame[wire.HeaderLen] != 'I' {
				return fmt.Errorf("server left in transaction state %q after %q", frame[wire.HeaderLen], sql)
			}
			return firstErr
		}
	}
}
