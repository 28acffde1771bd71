//go:build race

package plan

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// allocation counts are not the code's own.
const raceEnabled = true
