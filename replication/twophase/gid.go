package twophase

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// GID is a global transaction id: the name PREPARE TRANSACTION gives a
// participant's transaction. The same GID names the transaction on every
// participant:
//
//	pgshard/1/<txid>/<decision shard>/<proxy>
//
// "pgshard/1/" marks pgshard's transactions (others' prepared transactions
// are never touched) and the format version. txid is 24 lower-case hex
// digits (96 random bits): unique. decision shard is the tag of the shard
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

// NewGID returns a new GID for a transaction coordinated by proxy whose
// commit record goes to decisionShard.
func NewGID(proxy, decisionShard string) (GID, error) {
	var b [txidLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("twophase: transaction id: %w", err)
	}
	return GID(gidPrefix + hex.EncodeToString(b[:]) + "/" + ShardTag(decisionShard) + "/" + ProxyTag(proxy)), nil
}

// ParsedGID is a GID's parts.
type ParsedGID struct {
	TxID string
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
	return ParsedGID{TxID: parts[0], ShardTag: parts[1], ProxyTag: parts[2]}, nil
}

// quoteLiteral quotes s as a SQL string literal (standard_conforming_strings on).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
