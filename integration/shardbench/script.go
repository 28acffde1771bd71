package shardbench

import (
	"fmt"
	"strings"
)

// AccountsPerScale is the number of accounts per unit of scale, as in
// `pgbench -i`: scale s has the aids 1 to s*AccountsPerScale.
const AccountsPerScale = 100000

// The workload's pgbench scripts (for -f), by name. Both change a random
// account's balance, read it back and log the change, every statement by
// the sharding key aid; they need the variable scale (pgbench -s), and
// 100000 in them is AccountsPerScale.
const (
	// Transaction does it in one transaction, which pgshard must keep on
	// the account's shard (BEGIN goes to the shard of the UPDATE).
	Transaction = "transaction"
	// Autocommit sends the same statements without BEGIN and END: each
	// one is routed on its own.
	Autocommit = "autocommit"
)

// ScriptNames are the scripts' names, in the order reports show them.
var ScriptNames = []string{Transaction, Autocommit}

const (
	scriptVars = `\set aid random(1, 100000 * :scale)
\set delta random(-5000, 5000)
`
	scriptBody = `UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);
`
)

// Script returns the text of the script called name (Transaction or
// Autocommit).
func Script(name string) (string, error) {
	switch name {
	case Transaction:
		return scriptVars + "BEGIN;\n" + scriptBody + "END;\n", nil
	case Autocommit:
		return scriptVars + scriptBody, nil
	}
	return "", fmt.Errorf("shardbench: no script %q (want %s)", name, strings.Join(ScriptNames, " or "))
}

// Schema creates the workload's tables, as `pgbench -i` does (without
// branches and tellers, which the script does not use).
const Schema = `
CREATE TABLE pgbench_accounts (aid int NOT NULL PRIMARY KEY, bid int, abalance int, filler char(84)) WITH (fillfactor = 100);
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
`
