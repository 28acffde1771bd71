package wire

// SQLSTATE codes pgshard reports or looks for: the one list, used by every
// package. Names follow PostgreSQL's errcodes.txt.
const (
	SQLStateProtocolViolation         = "08P01"
	SQLStateConnectionFailure         = "08006"
	SQLStateConnectionException       = "08000"
	SQLStateInvalidPassword           = "28P01"
	SQLStateInvalidAuthorization      = "28000"
	SQLStateTooManyConnections        = "53300"
	SQLStateFeatureNotSupported       = "0A000"
	SQLStateAdminShutdown             = "57P01"
	SQLStateCannotConnectNow          = "57P03"
	SQLStateQueryCanceled             = "57014"
	SQLStateProgramLimitExceeded      = "54000"
	SQLStateInvalidParameterValue     = "22023"
	SQLStateInternalError             = "XX000"
	SQLStateInvalidCatalogName        = "3D000"
	SQLStateInvalidTransactionState   = "25000"
	SQLStateInFailedTransaction       = "25P02"
	SQLStateInvalidSavepoint          = "3B001"
	SQLStateDuplicatePreparedStmt     = "42P05"
	SQLStateNotNullViolation          = "23502"
	SQLStateInvalidTextRepresentation = "22P02"
	SQLStateNumericValueOutOfRange    = "22003"
	SQLStateDivisionByZero            = "22012"
	SQLStateBadCopyFileFormat         = "22P04"
	SQLStateConfigurationLimitExceed  = "53400"
	SQLStateSyntaxError               = "42601"
	SQLStateInvalidBinaryRepresent    = "22P03"
	SQLStateCharacterNotInRepertoire  = "22021"
	SQLStateReadOnlyTransaction       = "25006"
	SQLStateActiveSQLTransaction      = "25001"
	SQLStateNoActiveSQLTransaction    = "25P01"
	SQLStateObjectNotInPrerequisite   = "55000"
	SQLStateUndefinedObject           = "42704"
	SQLStateUndefinedTable            = "42P01"
	SQLStateUndefinedFunction         = "42883"
	SQLStateInvalidSchemaName         = "3F000"
	SQLStateInsufficientPrivilege     = "42501"
	SQLStateDuplicateObject           = "42710"
	SQLStateObjectInUse               = "55006"
	SQLStateConfigFileError           = "F0000"
	// Two-phase commit across shards (replication/twophase).
	SQLStateTransactionResolutionUnknown = "08007"
	SQLStateTransactionRollback          = "40000"
	SQLStateUniqueViolation              = "23505"
	SQLStateDeadlockDetected             = "40P01" // also a deadlock across shards (proxy/deadlock.go)

	// SQLStateIntervalFenced is pgshard's own (class PS, outside
	// PostgreSQL's classes): a write to a key interval that resharding
	// moves, rejected by the fence on the old owner; the proxy holds and
	// retries it on the new owner.
	SQLStateIntervalFenced = "PS001"
)
