package proxy

import (
	"context"

	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/wire"
)

func (s *session) runCopyIn(ctx context.Context, plan router.Plan, sql string) error {
	return wire.Errorf(wire.SQLStateFeatureNotSupported, "COPY into a sharded table over several shards is not supported yet")
}
