package twophase

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
)

// GID is a global transaction id: the name PREPARE TRANSACTION gives a
// participant's transaction. The same GID names the transaction on every
// participant:
//
//	pgshard/1/<txid>/<decision shard>/<proxy>
//
// "pgshard/1/" marks pgshard's transactions (others' prepared transactions
// are never touched) and the format version. txid is 24 lower-case hex
// digits: the coordinator's incarnation (12 digits, 48 random bits drawn
// once per process, see [Incarnation]) and a sequence number in it (12
// digits): unique. The proxy heartbeats meta with its incarnation, so
// recovery tells a restarted proxy's predecessor from it. decision shard is the tag of the shard
// whose prepared transaction carries the commit record (the decision
// pointer, see doc.go). proxy is the tag of the proxy that coordinates the
// commit, so that recovery can tell from its lease whether it is alive.
//
// A tag is the name path-escaped (url.PathEscape: no '/' inside), or, when
// the escaped name is longer than its budget (64 bytes for the shard, 99
// for the proxy) or starts with "~", "~" and the first 16 bytes of its
// SHA-256 in hex: recovery compares tags, never decodes them. The whole
// GID is at most MaxGIDLen bytes (PostgreSQL's GIDSIZE is 200, its
// terminating NUL included).
type GID string

// The GID format's constants.
const (
	gidPrefix = "pgshard/1/"
	txidLen   = 24
	// MaxGIDLen is the longest GID PostgreSQL accepts.
	MaxGIDLen = 199
	// maxShardTag is the budget of the decision shard's tag; the proxy's
	// tag gets the rest.
	maxShardTag = 64
	maxProxyTag = MaxGIDLen - len(gidPrefix) - txidLen - 2 - maxShardTag
)

// tag is name as it appears in a GID, at most max bytes.
func tag(name string, max int) string {
	t := url.PathEscape(name)
	if len(t) <= max && !strings.HasPrefix(t, "~") {
		return t
	}
	sum := sha256.Sum256([]byte(name))
	return "~" + hex.EncodeToString(sum[:16])
}

// ShardTag is shard's tag in a GID.
func ShardTag(shard string) string { return tag(shard, maxShardTag) }

// ProxyTag is proxy's tag in a GID.
func ProxyTag(proxy string) string { return tag(proxy, maxProxyTag) }

// incarnationLen is the length of an incarnation: 12 hex digits.
const incarnationLen = 12

// processIncarnation is this process's incarnation.
var processIncarnation = func() string {
	var b [incarnationLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("twophase: incarnation: " + err.Error()) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b[:])
}()

// Incarnation names this run of the process: 12 random hex digits drawn
// at start. The proxy sends it with its meta heartbeats
// (metarpc.ClientOptions.Incarnation) and its coordinator puts it in its
// GIDs, so that recovery counts a proxy restarted under the same ID as a
// new one: its predecessor's transactions are a dead proxy's at once.
func Incarnation() string { return processIncarnation }

// validIncarnation reports whether s is an incarnation.
func validIncarnation(s string) bool {
	if len(s) != incarnationLen {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// gidSeq numbers the GIDs of this process.
var gidSeq atomic.Uint64

// NewGID returns a new GID for a transaction coordinated by proxy, in
// this process's incarnation, whose commit record goes to decisionShard.
func NewGID(proxy, decisionShard string) (GID, error) {
	return newGID(processIncarnation, proxy, decisionShard), nil
}

// newGID is NewGID in incarnation inc.
func newGID(inc, proxy, decisionShard string) GID {
	seq := fmt.Sprintf("%012x", gidSeq.Add(1)&(1<<48-1))
	return GID(gidPrefix + inc + seq + "/" + ShardTag(decisionShard) + "/" + ProxyTag(proxy))
}

// ParsedGID is a GID's parts.
type ParsedGID struct {
	TxID string
	// Incarnation is the coordinator's (the TxID's first 12 digits; in
	// GIDs made before incarnations, random digits that match none).
	Incarnation string
	// ShardTag and ProxyTag are the decision shard's and the proxy's
	// tags (compare with ShardTag and ProxyTag).
	ShardTag, ProxyTag string
}

// errNotOurs is returned by ParseGID for a GID pgshard did not make.
var errNotOurs = errors.New("not a pgshard transaction id")

// IsPgshard reports whether gid was made by pgshard (by its prefix).
func IsPgshard(gid string) bool { return strings.HasPrefix(gid, gidPrefix) }

// ParseGID splits a GID made by NewGID.
func ParseGID(gid string) (ParsedGID, error) {
	if !IsPgshard(gid) {
		return ParsedGID{}, fmt.Errorf("twophase: %q: %w", gid, errNotOurs)
	}
	parts := strings.Split(gid[len(gidPrefix):], "/")
	if len(parts) != 3 || len(parts[0]) != txidLen || parts[1] == "" || parts[2] == "" {
		return ParsedGID{}, fmt.Errorf("twophase: %q: malformed pgshard transaction id (want pgshard/1/<txid>/<shard>/<proxy>)", gid)
	}
	if _, err := hex.DecodeString(parts[0]); err != nil {
		return ParsedGID{}, fmt.Errorf("twophase: %q: transaction id is not hex", gid)
	}
	return ParsedGID{TxID: parts[0], Incarnation: parts[0][:incarnationLen], ShardTag: parts[1], ProxyTag: parts[2]}, nil
}

// quoteLiteral quotes s as a SQL string literal (standard_conforming_strings on).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
