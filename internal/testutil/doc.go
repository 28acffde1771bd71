// Package testutil holds the small helpers the project's tests share:
// polling a condition with a deadline (Poll, WaitFor, Until) instead of
// sleeping as synchronisation.
//
// It imports only the standard library, so the unit tests of every
// package, the test kit under integration/ and the integration tests can
// all use it without an import cycle. Product code must not import it
// (internal/layers_test.go checks).
package testutil
