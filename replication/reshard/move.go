package reshard

import (
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strconv"
	"strings"

	"github.com/pgshard/pgshard/shardmap"
)

// Move is one key interval of a distribution to move, with the tables of
// the distribution. It is plain data, meant to be kept in the workflow's
// replicated state: an [Engine] built from the same Move finds the objects
// an earlier Engine created.
type Move struct {
	// ID names the move's objects on both servers (see [Names]): 1 to 40
	// characters of a-z, 0-9 and _. Two moves running at the same time
	// need different IDs.
	ID string
	// KeyType and Strategy are the distribution's.
	KeyType  shardmap.KeyType
	Strategy shardmap.Strategy
	// Lo and Hi are the interval [Lo, Hi): key values for Range, signed
	// 64-bit hash values for Hash (as in shardmap.Interval).
	Lo, Hi shardmap.Bound
	// Tables are the distribution's sharded tables.
	Tables []Table
}

// Table is a sharded table of a move.
type Table struct {
	// Name is schema-qualified and lower-case, as in shardmap.Table:
	// "public.users".
	Name string
	// KeyColumn is the sharding key column.
	KeyColumn string
}

// idPattern is what a move ID may contain: it ends up in slot names, which
// allow only lower-case letters, digits and underscores.
var idPattern = regexp.MustCompile(`^[a-z0-9_]{1,40}$`)

// MoveFromMap builds the Move of interval [lo, hi) of distribution dist in
// m, with every sharded table of the distribution. The interval must lie
// inside one interval of the distribution (a split comes first).
func MoveFromMap(m *shardmap.Map, dist string, lo, hi shardmap.Bound, id string) (Move, error) {
	d := m.Distribution(dist)
	if d == nil {
		return Move{}, fmt.Errorf("reshard: no distribution %q in the shard map", dist)
	}
	mv := Move{ID: id, KeyType: d.KeyType, Strategy: d.Strategy, Lo: lo, Hi: hi}
	for _, t := range m.Tables {
		if t.Distribution == dist && t.Kind == shardmap.Sharded {
			mv.Tables = append(mv.Tables, Table{Name: t.Name, KeyColumn: t.KeyColumn})
		}
	}
	inside := false
	for _, iv := range d.Intervals {
		if iv.Lo.Compare(lo) <= 0 && hi.Compare(iv.Hi) <= 0 {
			inside = true
		}
	}
	if !inside {
		return Move{}, fmt.Errorf("reshard: interval [%s, %s) is not inside one interval of distribution %q: split it first", lo, hi, dist)
	}
	return mv, mv.Validate()
}

// Validate checks the move: a valid ID, known key type and strategy,
// bounds of the distribution's bound type with Lo < Hi, at least one
// table, each with a key column.
func (m Move) Validate() error {
	var errs []error
	if !idPattern.MatchString(m.ID) {
		errs = append(errs, fmt.Errorf("move id %q: want 1 to 40 characters of a-z, 0-9 and _", m.ID))
	}
	if !m.KeyType.Known() {
		errs = append(errs, fmt.Errorf("unknown key type %q", m.KeyType))
	}
	if !m.Strategy.Known() {
		errs = append(errs, fmt.Errorf("unknown strategy %q", m.Strategy))
	}
	bt := m.KeyType
	if m.Strategy == shardmap.Hash {
		bt = shardmap.KeyBigint
	}
	for _, b := range []struct {
		name string
		b    shardmap.Bound
	}{{"lo", m.Lo}, {"hi", m.Hi}} {
		if b.b.IsZero() {
			errs = append(errs, fmt.Errorf("%s bound missing", b.name))
			continue
		}
		if err := checkBoundType(b.b, bt); err != nil {
			errs = append(errs, fmt.Errorf("%s bound %s: %w", b.name, b.b, err))
		}
	}
	if !m.Lo.IsZero() && !m.Hi.IsZero() && m.Lo.Compare(m.Hi) >= 0 {
		errs = append(errs, fmt.Errorf("empty interval [%s, %s)", m.Lo, m.Hi))
	}
	if len(m.Tables) == 0 {
		errs = append(errs, errors.New("no tables"))
	}
	seen := map[string]bool{}
	for _, t := range m.Tables {
		if _, _, err := splitName(t.Name); err != nil {
			errs = append(errs, err)
		}
		if t.KeyColumn == "" {
			errs = append(errs, fmt.Errorf("table %s: no key column", t.Name))
		}
		if seen[t.Name] {
			errs = append(errs, fmt.Errorf("table %s listed twice", t.Name))
		}
		seen[t.Name] = true
	}
	if len(errs) > 0 {
		return fmt.Errorf("reshard: invalid move: %w", errors.Join(errs...))
	}
	return nil
}

func checkBoundType(b shardmap.Bound, kt shardmap.KeyType) error {
	if b.IsNegInf() || b.IsPosInf() {
		return nil
	}
	ok := false
	switch kt {
	case shardmap.KeyBigint:
		_, ok = b.Int64()
	case shardmap.KeyText:
		_, ok = b.Text()
	case shardmap.KeyUUID:
		_, ok = b.UUID()
	}
	if !ok {
		return fmt.Errorf("not a %s value", kt)
	}
	return nil
}

// String says what moves, for logs and errors.
func (m Move) String() string {
	return fmt.Sprintf("move %s: %s interval [%s, %s)", m.ID, m.Strategy, m.Lo, m.Hi)
}

// Names are the names of a move's objects. Forward objects carry the
// prefix pgshard_mv_, those of the reverse replication pgshard_rv_.
type Names struct {
	// Publication (on the publishing side), Subscription (on the
	// subscribing side) and Slot (on the publishing side) share one name.
	Publication, Subscription, Slot string
	// Trigger is the fence trigger on each table of the fenced side.
	Trigger string
	// FunctionPrefix starts the name of the fence's trigger function of
	// each table (schema [FenceSchema]); see [Names.Function].
	FunctionPrefix string
}

// FenceSchema holds the fences' trigger functions.
const FenceSchema = "pgshard_reshard"

// NamesFor returns the object names of move id, forward or reverse.
func NamesFor(id string, reverse bool) Names {
	p := "pgshard_mv_" + id
	if reverse {
		p = "pgshard_rv_" + id
	}
	return Names{Publication: p, Subscription: p, Slot: p, Trigger: "pgshard_fence_" + id, FunctionPrefix: "fence_" + id + "_"}
}

// Function returns the name (in FenceSchema) of the fence function of
// table: the prefix and a hash of the table's name, so it stays within
// PostgreSQL's 63 bytes.
func (n Names) Function(table string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(table))
	return fmt.Sprintf("%s%08x", n.FunctionPrefix, h.Sum32())
}

// splitName splits "schema.table".
func splitName(name string) (schema, table string, err error) {
	s, t, ok := strings.Cut(name, ".")
	if !ok || s == "" || t == "" || strings.Contains(t, ".") {
		return "", "", fmt.Errorf("table %q: want schema.table", name)
	}
	return s, t, nil
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteLiteral quotes an SQL string literal (standard_conforming_strings).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// qualified quotes "schema.table" as "schema"."table".
func qualified(name string) string {
	s, t, err := splitName(name)
	if err != nil {
		return quoteIdent(name)
	}
	return quoteIdent(s) + "." + quoteIdent(t)
}

// keyExpr is the expression the interval bounds compare with, for a key
// expression (a quoted column, or NEW."col" in a trigger): the key itself
// for Range (text as COLLATE "C", as pgshard orders it), its hash for
// Hash.
func (m Move) keyExpr(key string) string {
	if m.Strategy == shardmap.Hash {
		return m.KeyType.HashSQL(key)
	}
	if m.KeyType == shardmap.KeyText {
		return "(" + key + `)::text COLLATE "C"`
	}
	return key
}

// boundLiteral is b as an SQL literal of the bound type.
func (m Move) boundLiteral(b shardmap.Bound) string {
	if v, ok := b.Int64(); ok {
		return strconv.FormatInt(v, 10) + "::int8"
	}
	if v, ok := b.Text(); ok {
		return quoteLiteral(v) + `::text COLLATE "C"`
	}
	if v, ok := b.UUID(); ok {
		return quoteLiteral(v.String()) + "::uuid"
	}
	return "NULL"
}

// Filter returns the SQL condition that is true for the rows of the
// interval in table t, usable as a publication row filter (only built-in
// immutable functions and operators) and in ordinary queries. A NULL key
// is outside every interval.
func (m Move) Filter(t Table) string {
	return m.filterOn(quoteIdent(t.KeyColumn))
}

// filterOn is Filter for any key expression.
func (m Move) filterOn(key string) string {
	e := m.keyExpr(key)
	var conds []string
	if !m.Lo.IsNegInf() {
		conds = append(conds, e+" >= "+m.boundLiteral(m.Lo))
	}
	if !m.Hi.IsPosInf() {
		conds = append(conds, e+" < "+m.boundLiteral(m.Hi))
	}
	if len(conds) == 0 {
		return "((" + key + ") IS NOT NULL)"
	}
	return "(" + strings.Join(conds, " AND ") + ")"
}
