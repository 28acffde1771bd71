package shardmap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ParseYAML parses the YAML form of a map, which is written for people:
//
//	epoch: 1
//	shards:
//	  - {name: s1, primary: "10.0.0.1:5432", replicas: ["10.0.0.2:5432"]}
//	  - {name: s2, primary: "10.0.0.3:5432", state: readonly}
//	distributions:
//	  - name: users
//	    key_type: bigint          # bigint, text or uuid
//	    strategy: range           # range or hash
//	    default_shard: s1         # for unsharded tables
//	    intervals:                # [lo, hi): lo belongs, hi does not
//	      - {lo: -inf, hi: 1000000, shard: s1}
//	      - {lo: 1000000, hi: +inf, shard: s2}
//	  - name: events
//	    key_type: uuid
//	    strategy: hash
//	    shards_even: [s1, s2]     # instead of intervals: equal hash ranges
//	tables:
//	  - {name: public.users, distribution: users, key: id}
//	  - {name: public.settings, unsharded: true, distribution: users}
//
// A shard's state defaults to active. -inf and +inf are written unquoted;
// a text bound that is literally "-inf" is quoted. The bounds of a hash
// distribution are int64 hash values; shards_even is [EvenHashIntervals].
//
// ParseYAML reports every problem it
// can find in one error, each with its line number: unknown or repeated
// fields, values of the wrong kind, bounds that are not of the
// distribution's type. It does not check the map as a whole (gaps,
// unknown shards, ...): call [Map.Validate] on the result.
//
// Anchors and aliases are refused, and so is more than one document.
func ParseYAML(data []byte) (*Map, error) { return parseYAML(data, false) }

// ParseYAMLWithoutEpoch is ParseYAML for a map whose epoch its reader
// assigns (a map file given to the meta cluster, which makes it the next
// epoch): the epoch line may be missing, and the map then has Epoch 0.
func ParseYAMLWithoutEpoch(data []byte) (*Map, error) { return parseYAML(data, true) }

func parseYAML(data []byte, epochOptional bool) (*Map, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("shard map: the YAML is empty")
		}
		return nil, fmt.Errorf("shard map: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("shard map: %w", err)
		}
		return nil, fmt.Errorf("shard map: line %d: a second YAML document; a shard map is one document", extra.Line)
	}
	p := &parser{epochOptional: epochOptional}
	m := p.parseMap(&doc)
	if err := errors.Join(p.errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// parser collects problems with their line numbers.
type parser struct {
	errs          []error
	epochOptional bool // a missing epoch is no problem (ParseYAMLWithoutEpoch)
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("shard map: line %d: %s", n.Line, fmt.Sprintf(format, args...)))
}

// fields checks that n is a mapping with only the known keys, each once,
// and returns the value node of each key present.
func (p *parser) fields(n *yaml.Node, what string, known ...string) map[string]*yaml.Node {
	if !p.kind(n, yaml.MappingNode, what, "a mapping") {
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if !p.kind(k, yaml.ScalarNode, what+" key", "a name") {
			continue
		}
		switch {
		case !slices.Contains(known, k.Value):
			p.errorf(k, "%s has no field %q (known: %s)", what, k.Value, strings.Join(known, ", "))
		case out[k.Value] != nil:
			p.errorf(k, "%s has field %q twice", what, k.Value)
		default:
			out[k.Value] = val
		}
	}
	return out
}

// label names the i-th item of list in messages: by its name field, as
// "shard s1", when it has one, else by position, as "shards[0]".
func label(n *yaml.Node, kind, list string, i int) string {
	if n.Kind == yaml.MappingNode {
		for j := 0; j+1 < len(n.Content); j += 2 {
			k, v := n.Content[j], n.Content[j+1]
			if k.Kind == yaml.ScalarNode && k.Value == "name" && v.Kind == yaml.ScalarNode && v.Tag != "!!null" && v.Value != "" {
				return kind + " " + v.Value
			}
		}
	}
	return fmt.Sprintf("%s[%d]", list, i)
}

// kind checks a node's kind, refusing aliases.
func (p *parser) kind(n *yaml.Node, k yaml.Kind, what, want string) bool {
	if n.Kind == yaml.AliasNode {
		p.errorf(n, "%s is an alias; anchors and aliases are not supported", what)
		return false
	}
	if n.Kind != k {
		p.errorf(n, "%s must be %s", what, want)
		return false
	}
	return true
}

// scalar returns the text of a non-null scalar.
func (p *parser) scalar(n *yaml.Node, what string) (string, bool) {
	if !p.kind(n, yaml.ScalarNode, what, "a single value") {
		return "", false
	}
	if n.Tag == "!!null" {
		p.errorf(n, "%s is empty", what)
		return "", false
	}
	return n.Value, true
}

// str returns the text of an optional scalar field, "" if absent.
func (p *parser) str(f map[string]*yaml.Node, key, what string) string {
	n := f[key]
	if n == nil {
		return ""
	}
	s, _ := p.scalar(n, what+" "+key)
	return s
}

// seq returns the items of an optional sequence field; null is empty.
func (p *parser) seq(n *yaml.Node, what string) []*yaml.Node {
	if n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return nil
	}
	if !p.kind(n, yaml.SequenceNode, what, "a list") {
		return nil
	}
	return n.Content
}

func (p *parser) parseMap(doc *yaml.Node) *Map {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		p.errorf(doc, "the YAML is empty")
		return nil
	}
	f := p.fields(doc.Content[0], "the shard map", "epoch", "shards", "distributions", "tables")
	if f == nil {
		return nil
	}
	m := &Map{}
	if n := f["epoch"]; n == nil {
		if !p.epochOptional {
			p.errorf(doc.Content[0], "the shard map has no epoch")
		}
	} else if s, ok := p.scalar(n, "epoch"); ok {
		e, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			p.errorf(n, "epoch %q must be a whole number from 1 up", s)
		}
		m.Epoch = e
	}
	for i, n := range p.seq(f["shards"], "shards") {
		m.Shards = append(m.Shards, p.parseShard(n, i))
	}
	for i, n := range p.seq(f["distributions"], "distributions") {
		m.Distributions = append(m.Distributions, p.parseDistribution(n, i))
	}
	for i, n := range p.seq(f["tables"], "tables") {
		m.Tables = append(m.Tables, p.parseTable(n, i))
	}
	return m
}

func (p *parser) parseShard(n *yaml.Node, i int) Shard {
	what := label(n, "shard", "shards", i)
	f := p.fields(n, what, "name", "primary", "replicas", "state", "fenced", "switch")
	s := Shard{State: StateActive}
	if f == nil {
		return s
	}
	s.Name = p.str(f, "name", what)
	if f["primary"] == nil {
		p.errorf(n, "%s has no primary (host:port)", what)
	} else {
		s.Primary = p.endpoint(f["primary"], what+" primary")
	}
	for j, r := range p.seq(f["replicas"], what+" replicas") {
		s.Replicas = append(s.Replicas, p.endpoint(r, fmt.Sprintf("%s replica #%d", what, j+1)))
	}
	if st := f["state"]; st != nil {
		if v, ok := p.scalar(st, what+" state"); ok {
			s.State = ShardState(v)
			if !s.State.Known() {
				p.errorf(st, "%s has unknown state %q (want %s, %s or %s)", what, v, StateActive, StateReadOnly, StateOffline)
			}
		}
	}
	for j, r := range p.seq(f["fenced"], what+" fenced") {
		s.Fenced = append(s.Fenced, p.endpoint(r, fmt.Sprintf("%s fenced #%d", what, j+1)))
	}
	if n := f["switch"]; n != nil {
		s.Switch = p.parseSwitch(n, what+" switch")
	}
	return s
}

func (p *parser) parseSwitch(n *yaml.Node, what string) *Switch {
	f := p.fields(n, what, "kind", "from", "to", "step", "reason")
	sw := &Switch{}
	if f == nil {
		return sw
	}
	sw.Kind = SwitchKind(p.str(f, "kind", what))
	if sw.Kind != "" && !sw.Kind.Known() {
		p.errorf(f["kind"], "%s has unknown kind %q (want %s or %s)", what, sw.Kind, Failover, Switchover)
	}
	if f["from"] != nil {
		sw.From = p.endpoint(f["from"], what+" from")
	}
	if f["to"] != nil {
		sw.To = p.endpoint(f["to"], what+" to")
	}
	if f["step"] != nil {
		sw.Step, _ = p.scalar(f["step"], what+" step")
	}
	if f["reason"] != nil {
		sw.Reason, _ = p.scalar(f["reason"], what+" reason")
	}
	return sw
}

func (p *parser) endpoint(n *yaml.Node, what string) Endpoint {
	s, ok := p.scalar(n, what)
	if !ok {
		return Endpoint{}
	}
	e, err := ParseEndpoint(s)
	if err != nil {
		p.errorf(n, "%s %q must be host:port: %v", what, s, err)
	}
	return e
}

func (p *parser) parseDistribution(n *yaml.Node, i int) Distribution {
	what := label(n, "distribution", "distributions", i)
	f := p.fields(n, what, "name", "key_type", "strategy", "default_shard", "intervals", "shards_even", "moving")
	var d Distribution
	if f == nil {
		return d
	}
	d.Name = p.str(f, "name", what)
	d.DefaultShard = p.str(f, "default_shard", what)
	typesOK := true
	if kt := f["key_type"]; kt == nil {
		p.errorf(n, "%s has no key_type (bigint, text or uuid)", what)
		typesOK = false
	} else if v, ok := p.scalar(kt, what+" key_type"); ok {
		d.KeyType = KeyType(v)
		if !d.KeyType.Known() {
			p.errorf(kt, "%s has unknown key_type %q (want bigint, text or uuid)", what, v)
			typesOK = false
		}
	} else {
		typesOK = false
	}
	if st := f["strategy"]; st == nil {
		p.errorf(n, "%s has no strategy (range or hash)", what)
		typesOK = false
	} else if v, ok := p.scalar(st, what+" strategy"); ok {
		d.Strategy = Strategy(v)
		if !d.Strategy.Known() {
			p.errorf(st, "%s has unknown strategy %q (want range or hash)", what, v)
			typesOK = false
		}
	} else {
		typesOK = false
	}

	if even := f["shards_even"]; even != nil {
		if f["intervals"] != nil {
			p.errorf(even, "%s has both intervals and shards_even; use one", what)
		}
		if d.Strategy != Hash && typesOK {
			p.errorf(even, "%s: shards_even is only for strategy hash", what)
		}
		var names []string
		for j, s := range p.seq(even, what+" shards_even") {
			if v, ok := p.scalar(s, fmt.Sprintf("%s shards_even[%d]", what, j)); ok {
				names = append(names, v)
			}
		}
		if len(names) == 0 && (even.Kind == yaml.SequenceNode || even.Tag == "!!null") {
			p.errorf(even, "%s: shards_even lists no shards", what)
		}
		d.Intervals = EvenHashIntervals(names)
		d.Moving = p.parseMoving(f["moving"], &d, what, typesOK)
		return d
	}
	for j, in := range p.seq(f["intervals"], what+" intervals") {
		iw := fmt.Sprintf("%s interval #%d", what, j+1)
		fi := p.fields(in, iw, "lo", "hi", "shard")
		if fi == nil {
			continue
		}
		var iv Interval
		iv.Shard = p.str(fi, "shard", iw)
		if fi["shard"] == nil {
			p.errorf(in, "%s has no shard", iw)
		}
		for _, b := range []struct {
			key string
			dst *Bound
		}{{"lo", &iv.Lo}, {"hi", &iv.Hi}} {
			if bn := fi[b.key]; bn == nil {
				p.errorf(in, "%s has no %s", iw, b.key)
			} else if typesOK {
				*b.dst = p.bound(bn, &d, iw+" "+b.key)
			}
		}
		d.Intervals = append(d.Intervals, iv)
	}
	d.Moving = p.parseMoving(f["moving"], &d, what, typesOK)
	return d
}

// parseMoving parses a distribution's moving-interval markers:
// {id, lo, hi, from, to, step}.
func (p *parser) parseMoving(n *yaml.Node, d *Distribution, what string, typesOK bool) []Moving {
	var out []Moving
	for j, in := range p.seq(n, what+" moving") {
		mw := fmt.Sprintf("%s moving interval #%d", what, j+1)
		fi := p.fields(in, mw, "id", "lo", "hi", "from", "to", "step")
		if fi == nil {
			continue
		}
		mv := Moving{ID: p.str(fi, "id", mw), From: p.str(fi, "from", mw), To: p.str(fi, "to", mw), Step: MoveStep(p.str(fi, "step", mw))}
		for _, b := range []struct {
			key string
			dst *Bound
		}{{"lo", &mv.Lo}, {"hi", &mv.Hi}} {
			if bn := fi[b.key]; bn == nil {
				p.errorf(in, "%s has no %s", mw, b.key)
			} else if typesOK {
				*b.dst = p.bound(bn, d, mw+" "+b.key)
			}
		}
		out = append(out, mv)
	}
	return out
}

// bound parses an interval bound of distribution d: plain -inf or +inf, or
// a value of d's bound type.
func (p *parser) bound(n *yaml.Node, d *Distribution, what string) Bound {
	s, ok := p.scalar(n, what)
	if !ok {
		return Bound{}
	}
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) == 0 {
		switch s {
		case "-inf":
			return NegInf()
		case "+inf":
			return PosInf()
		}
	}
	switch d.boundType() {
	case KeyBigint:
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			if d.Strategy == Hash {
				p.errorf(n, "%s %q must be -inf, +inf or a bigint hash value (from -9223372036854775808 to 9223372036854775807)", what, s)
			} else {
				p.errorf(n, "%s %q must be -inf, +inf or a bigint (from -9223372036854775808 to 9223372036854775807)", what, s)
			}
			return Bound{}
		}
		return Int64Bound(v)
	case KeyUUID:
		u, err := ParseUUID(s)
		if err != nil {
			p.errorf(n, "%s must be -inf, +inf or a uuid: %v", what, err)
			return Bound{}
		}
		return UUIDBound(u)
	}
	return TextBound(s)
}

func (p *parser) parseTable(n *yaml.Node, i int) Table {
	what := label(n, "table", "tables", i)
	f := p.fields(n, what, "name", "distribution", "key", "unsharded", "cache")
	t := Table{Kind: Sharded}
	if f == nil {
		return t
	}
	t.Name = p.str(f, "name", what)
	t.Distribution = p.str(f, "distribution", what)
	t.KeyColumn = p.str(f, "key", what)
	if u := f["unsharded"]; u != nil {
		if v, ok := p.scalar(u, what+" unsharded"); ok {
			switch v {
			case "true":
				t.Kind = Unsharded
			case "false":
			default:
				p.errorf(u, "%s unsharded must be true or false, not %q", what, v)
			}
		}
	}
	if c := f["cache"]; c != nil {
		t.Cache = p.parseTableCache(c, what+" cache")
	}
	return t
}

// parseTableCache reads a table's cache settings: {enabled, ttl,
// max_entry_bytes}.
func (p *parser) parseTableCache(n *yaml.Node, what string) TableCache {
	var c TableCache
	f := p.fields(n, what, "enabled", "ttl", "max_entry_bytes")
	if f == nil {
		return c
	}
	if v := p.str(f, "enabled", what); v != "" {
		switch v {
		case "true":
			c.Enabled = true
		case "false":
		default:
			p.errorf(f["enabled"], "%s enabled must be true or false, not %q", what, v)
		}
	}
	if v := p.str(f, "ttl", what); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			p.errorf(f["ttl"], "%s ttl must be a duration such as 30s or 5m, not %q", what, v)
		}
		c.TTL = d
	}
	if v := p.str(f, "max_entry_bytes", what); v != "" {
		b, err := strconv.Atoi(v)
		if err != nil || b < 0 {
			p.errorf(f["max_entry_bytes"], "%s max_entry_bytes must be a number of bytes, not %q", what, v)
		}
		c.MaxEntryBytes = b
	}
	return c
}

// MarshalYAML implements yaml.Marshaler, so that yaml.Marshal(m) writes the
// YAML form that ParseYAML reads. [Map.YAML] is the shortcut.
func (m *Map) MarshalYAML() (any, error) {
	root := mapping(
		"epoch", plain(strconv.FormatUint(m.Epoch, 10), "!!int"),
	)
	shards := seq(false)
	for _, s := range m.Shards {
		n := mapping("name", str(s.Name), "primary", str(s.Primary.String()))
		n.Style = yaml.FlowStyle
		if len(s.Replicas) > 0 {
			r := seq(true)
			for _, e := range s.Replicas {
				r.Content = append(r.Content, str(e.String()))
			}
			add(n, "replicas", r)
		}
		if s.State != StateActive {
			add(n, "state", str(string(s.State)))
		}
		if len(s.Fenced) > 0 {
			r := seq(true)
			for _, e := range s.Fenced {
				r.Content = append(r.Content, str(e.String()))
			}
			add(n, "fenced", r)
		}
		if sw := s.Switch; sw != nil {
			w := mapping("kind", str(string(sw.Kind)), "from", str(sw.From.String()))
			w.Style = yaml.FlowStyle
			if sw.To != (Endpoint{}) {
				add(w, "to", str(sw.To.String()))
			}
			if sw.Step != "" {
				add(w, "step", str(sw.Step))
			}
			if sw.Reason != "" {
				add(w, "reason", str(sw.Reason))
			}
			add(n, "switch", w)
		}
		shards.Content = append(shards.Content, n)
	}
	add(root, "shards", shards)

	dists := seq(false)
	for i := range m.Distributions {
		dists.Content = append(dists.Content, distributionNode(&m.Distributions[i]))
	}
	add(root, "distributions", dists)

	tables := seq(false)
	for _, t := range m.Tables {
		n := mapping("name", str(t.Name))
		n.Style = yaml.FlowStyle
		if t.Kind == Unsharded {
			add(n, "unsharded", plain("true", "!!bool"))
		}
		add(n, "distribution", str(t.Distribution))
		if t.KeyColumn != "" {
			add(n, "key", str(t.KeyColumn))
		}
		if t.Cache != (TableCache{}) {
			c := mapping("enabled", plain(strconv.FormatBool(t.Cache.Enabled), "!!bool"))
			c.Style = yaml.FlowStyle
			if t.Cache.TTL != 0 {
				add(c, "ttl", str(t.Cache.TTL.String()))
			}
			if t.Cache.MaxEntryBytes != 0 {
				add(c, "max_entry_bytes", plain(strconv.Itoa(t.Cache.MaxEntryBytes), "!!int"))
			}
			add(n, "cache", c)
		}
		tables.Content = append(tables.Content, n)
	}
	add(root, "tables", tables)
	return root, nil
}

func distributionNode(d *Distribution) *yaml.Node {
	n := mapping(
		"name", str(d.Name),
		"key_type", str(string(d.KeyType)),
		"strategy", str(string(d.Strategy)),
	)
	if d.DefaultShard != "" {
		add(n, "default_shard", str(d.DefaultShard))
	}
	if names, ok := evenShards(d); ok {
		s := seq(true)
		for _, name := range names {
			s.Content = append(s.Content, str(name))
		}
		add(n, "shards_even", s)
	} else {
		ivs := seq(false)
		for _, iv := range d.Intervals {
			in := mapping("lo", boundNode(iv.Lo), "hi", boundNode(iv.Hi), "shard", str(iv.Shard))
			in.Style = yaml.FlowStyle
			ivs.Content = append(ivs.Content, in)
		}
		add(n, "intervals", ivs)
	}
	if len(d.Moving) > 0 {
		ms := seq(false)
		for _, mv := range d.Moving {
			in := mapping("id", str(mv.ID), "lo", boundNode(mv.Lo), "hi", boundNode(mv.Hi), "from", str(mv.From), "to", str(mv.To), "step", str(string(mv.Step)))
			in.Style = yaml.FlowStyle
			ms.Content = append(ms.Content, in)
		}
		add(n, "moving", ms)
	}
	return n
}

// evenShards returns the shards of d's intervals if they are exactly what
// shards_even generates for them.
func evenShards(d *Distribution) ([]string, bool) {
	if d.Strategy != Hash || len(d.Intervals) == 0 {
		return nil, false
	}
	names := make([]string, len(d.Intervals))
	for i, iv := range d.Intervals {
		names[i] = iv.Shard
	}
	return names, slices.Equal(EvenHashIntervals(names), d.Intervals)
}

func boundNode(b Bound) *yaml.Node {
	switch b.kind {
	case boundNegInf, boundPosInf:
		return plain(b.String(), "!!str")
	case boundInt64:
		return plain(b.String(), "!!int")
	case boundText:
		n := str(b.s)
		n.Style = yaml.DoubleQuotedStyle
		return n
	case boundUUID:
		return str(b.u.String())
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
}

// YAML returns the YAML form of m, which ParseYAML reads back to an equal
// map.
func (m *Map) YAML() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("shard map: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("shard map: %w", err)
	}
	return b.Bytes(), nil
}

// Node builders for MarshalYAML.

func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func plain(s, tag string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: s} }

func seq(flow bool) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	if flow {
		n.Style = yaml.FlowStyle
	}
	return n
}

// mapping builds a mapping from key, value pairs (string, *yaml.Node).
func mapping(kv ...any) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i+1 < len(kv); i += 2 {
		add(n, kv[i].(string), kv[i+1].(*yaml.Node))
	}
	return n
}

func add(n *yaml.Node, key string, val *yaml.Node) {
	n.Content = append(n.Content, str(key), val)
}

// SameContent reports whether a and b describe the same map apart from
// their epochs (the comparison is of their YAML forms, which carry
// everything a map holds). Applying a map with the same content as the
// current one changes nothing, so the meta cluster answers it without a
// new epoch.
func SameContent(a, b *Map) bool {
	if a == nil || b == nil {
		return a == b
	}
	ac, bc := a.Clone(), b.Clone()
	ac.Epoch, bc.Epoch = 0, 0
	ay, aerr := ac.YAML()
	by, berr := bc.YAML()
	return aerr == nil && berr == nil && bytes.Equal(ay, by)
}
