package plan

import (
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// schemaDDL reports whether n creates, changes or drops an object of the
// database's schema (a table, index, sequence, view, function, type,
// trigger, policy, schema, extension, comment, privilege, ...): what must
// be alike on every shard. Cluster-wide objects (roles, databases,
// tablespaces), maintenance (VACUUM, ANALYZE, REINDEX, CLUSTER), data
// (TRUNCATE), locks and session statements are not.
func schemaDDL(n *pg.Node) bool {
	switch n.Node.(type) {
	case *pg.Node_CreateStmt, *pg.Node_CreateSeqStmt, *pg.Node_AlterSeqStmt, *pg.Node_IndexStmt,
		*pg.Node_AlterTableStmt, *pg.Node_RenameStmt, *pg.Node_DropStmt, *pg.Node_ViewStmt,
		*pg.Node_CreateFunctionStmt, *pg.Node_AlterFunctionStmt, *pg.Node_CompositeTypeStmt,
		*pg.Node_CreateEnumStmt, *pg.Node_AlterEnumStmt, *pg.Node_CreateRangeStmt, *pg.Node_DefineStmt,
		*pg.Node_CreateDomainStmt, *pg.Node_AlterDomainStmt, *pg.Node_AlterTypeStmt,
		*pg.Node_CreateTrigStmt, *pg.Node_CreatePolicyStmt, *pg.Node_AlterPolicyStmt, *pg.Node_RuleStmt,
		*pg.Node_CommentStmt, *pg.Node_CreateSchemaStmt, *pg.Node_AlterObjectSchemaStmt,
		*pg.Node_AlterOwnerStmt, *pg.Node_GrantStmt, *pg.Node_AlterDefaultPrivilegesStmt,
		*pg.Node_CreateExtensionStmt, *pg.Node_AlterExtensionStmt, *pg.Node_AlterExtensionContentsStmt,
		*pg.Node_CreateCastStmt, *pg.Node_CreateConversionStmt, *pg.Node_CreateOpClassStmt,
		*pg.Node_CreateOpFamilyStmt, *pg.Node_AlterOpFamilyStmt, *pg.Node_AlterOperatorStmt,
		*pg.Node_CreateStatsStmt, *pg.Node_AlterStatsStmt, *pg.Node_CreateTransformStmt,
		*pg.Node_CreateEventTrigStmt, *pg.Node_AlterEventTrigStmt, *pg.Node_AlterCollationStmt,
		*pg.Node_CreateForeignTableStmt, *pg.Node_SecLabelStmt, *pg.Node_AlterTsdictionaryStmt,
		*pg.Node_AlterTsconfigurationStmt:
		return true
	}
	return false
}

// tempObject reports whether n names a temporary object (CREATE TEMP
// TABLE/VIEW/SEQUENCE, or a name in schema pg_temp): it exists only on
// the session's server connection.
func tempObject(n *pg.Node) bool {
	temp := false
	walk(n.ProtoReflect(), func(m protoreflect.Message) bool {
		switch x := m.Interface().(type) {
		case *pg.RangeVar:
			if x.Relpersistence == "t" || isTempSchema(x.Schemaname) {
				temp = true
			}
		case *pg.List:
			// Qualified names in DROP, COMMENT, ...
			temp = tempName(x.Items)
		case *pg.CreateFunctionStmt:
			temp = tempName(x.Funcname)
		case *pg.ObjectWithArgs:
			temp = tempName(x.Objname)
		}
		return !temp
	})
	return temp
}

// tempName reports whether a qualified name is in schema pg_temp.
func tempName(parts []*pg.Node) bool {
	return len(parts) > 1 && isTempSchema(parts[0].GetString_().GetSval())
}

func isTempSchema(s string) bool {
	s = strings.ToLower(s)
	return s == "pg_temp" || strings.HasPrefix(s, "pg_temp_")
}

// sortedAllShards returns every shard of the map, sorted.
func (st *state) sortedAllShards() []string {
	return slices.Sorted(slices.Values(st.allShards))
}

// dropWhereExists returns, for a DROP of objects that name no table of
// the map, the statement the shards other than the default shard get: the
// same DROP with IF EXISTS. An object of a table the map does not know
// may have been made on the default shard only (CREATE TABLE AS, or
// before pgshard ran DDL on every shard): the DROP then removes it where
// it is, and fails as on PostgreSQL when the default shard lacks it.
func (b *builder) dropWhereExists(d *pg.DropStmt, shards []string) map[string]string {
	if d == nil || d.MissingOk {
		return nil
	}
	c := proto.Clone(d).(*pg.DropStmt)
	c.MissingOk = true
	text, err := pg.Deparse(&pg.ParseResult{Version: b.version, Stmts: []*pg.RawStmt{{Stmt: &pg.Node{Node: &pg.Node_DropStmt{DropStmt: c}}}}})
	if err != nil {
		return nil
	}
	per := make(map[string]string, len(shards))
	for _, s := range shards {
		if s != b.st.defaultShard {
			per[s] = text
		}
	}
	// The text holds the statement's literals: the template applies to
	// these only.
	for i := range b.pinned {
		b.pinned[i] = true
	}
	return per
}
