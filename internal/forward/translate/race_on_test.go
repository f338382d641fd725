//go:build race

package translate

// raceEnabled: the race detector slows every memory access about tenfold,
// and unevenly, so timings mean little and large inputs take minutes.
const raceEnabled = true
