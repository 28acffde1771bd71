package copysplit_test

import (
	"fmt"
	"strconv"

	"github.com/pgshard/pgshard/router/copysplit"
	"github.com/pgshard/pgshard/router/plan"
)

// A proxy splits COPY users (id, name) FROM STDIN (FORMAT csv, HEADER)
// over two shards by id. Each shard's stream is the header, its rows and
// the trailer.
func Example() {
	spec := &plan.CopySpec{KeyColumn: 0, Columns: 2, Format: "csv", Delimiter: ',', Header: true}
	route := func(key []byte, null bool) (int, error) {
		id, err := strconv.ParseInt(string(key), 10, 64)
		if null || err != nil {
			return 0, copysplit.InvalidInput("bigint", key)
		}
		return int(id % 2), nil
	}
	s, err := copysplit.New(spec, route, copysplit.WithColumnNames("id", "name"))
	if err != nil {
		panic(err)
	}
	streams := make([][]byte, 2)
	emit := func(shard int, row []byte) error {
		if streams[shard] == nil {
			h, _ := s.Header() // complete before the first row
			streams[shard] = append([]byte{}, h...)
		}
		streams[shard] = append(streams[shard], row...) // row is only valid now
		return nil
	}
	// Rows may span CopyData messages.
	for _, msg := range []string{"id,name\n1,al", "ice\n2,bob\n3,\"carol\n", "jones\"\n"} {
		if err := s.Write([]byte(msg), emit); err != nil {
			panic(err)
		}
	}
	if err := s.Close(emit); err != nil {
		panic(err)
	}
	for shard, st := range streams {
		fmt.Printf("shard %d: %q\n", shard, append(st, s.Trailer()...))
	}

	// Errors read like PostgreSQL's.
	s, _ = copysplit.New(spec, route, copysplit.WithColumnNames("id", "name"))
	err = s.Write([]byte("id,name\nx,dave\n"), emit)
	e := err.(*copysplit.Error)
	fmt.Printf("%s: %s\nCONTEXT: %s\n", e.Code, e.Message, e.Where("users"))
	// Output:
	// shard 0: "id,name\n2,bob\n"
	// shard 1: "id,name\n1,alice\n3,\"carol\njones\"\n"
	// 22P02: invalid input syntax for type bigint: "x"
	// CONTEXT: COPY users, line 2, column id: "x"
}
