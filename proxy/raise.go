package proxy

import (
	"encoding/binary"
	"slices"
	"strings"

	"github.com/pgshard/pgshard/wire"
)

// appendRun appends Parse, Bind and Execute of sql as the unnamed
// statement and portal, without parameters (no Sync).
func appendRun(dst []byte, sql string) []byte {
	start := len(dst)
	dst = append(dst, 'P', 0, 0, 0, 0, 0)
	dst = append(dst, sql...)
	dst = append(dst, 0, 0, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	dst = append(dst, 'B', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0)
	return append(dst, 'E', 0, 0, 0, 9, 0, 0, 0, 0, 0)
}

// raiseContext starts the Where field the server gives an error raised
// by the proxy's DO block.
const raiseContext = "PL/pgSQL function inline_code_block "

// raisedError returns an ErrorResponse from the server without its Where
// field (CONTEXT: PL/pgSQL function inline_code_block line 1 at RAISE)
// when it is one of the proxy's refusals (raiseViaServer): the client is
// told what the proxy refused, not how it made the server say it.
// Otherwise frame is returned as is.
func (s *session) raisedError(frame []byte) []byte {
	where := wire.ErrorField(frame, 'W')
	if !strings.HasPrefix(where, raiseContext) || strings.Contains(where, "\n") {
		return frame
	}
	msg := wire.ErrorField(frame, 'M')
	s.mu.Lock()
	i := slices.Index(s.raised, msg)
	if i >= 0 {
		s.raised = slices.Delete(s.raised, i, i+1)
		s.raises.Store(int32(len(s.raised)))
	}
	s.mu.Unlock()
	if i < 0 {
		return frame
	}
	return withoutErrorField(frame, 'W')
}

// withoutErrorField returns a copy of the ErrorResponse frame without its
// field f.
func withoutErrorField(frame []byte, f byte) []byte {
	out := make([]byte, wire.HeaderLen, len(frame))
	out[0] = frame[0]
	b := frame[wire.HeaderLen:]
	for len(b) > 0 && b[0] != 0 {
		end := 1
		for end < len(b) && b[end] != 0 {
			end++
		}
		if end >= len(b) {
			return frame // malformed: leave it
		}
		if b[0] != f {
			out = append(out, b[:end+1]...)
		}
		b = b[end+1:]
	}
	out = append(out, 0)
	binary.BigEndian.PutUint32(out[1:], uint32(len(out)-1))
	return out
}
