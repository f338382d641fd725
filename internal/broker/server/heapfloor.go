package server

// heapFloorSize is the least heap the garbage collector lets the broker
// grow to between two collections, less the live heap.
//
// The broker's live heap is about 1 MiB, so with GOGC=100 the collector
// aims at its 4 MiB minimum and, at 20,000 reads a second (a few KiB of
// garbage each, nearly all of it grpc-go's and net/http's), collected a
// hundred times a second: GC was a third of the CPU of a GetToken or a
// REST GET /v1/token. Counting 16 MiB more as live moves the goal to about
// 36 MiB, ten times fewer collections. Big heaps (10,000 watchers hold
// about 70 MiB) barely notice.
const heapFloorSize = 16 << 20

// newHeapFloor returns memory that only raises the collector's goal (a
// "ballast"). It holds no pointers, so marking skips it, and it is never
// written, so its pages are never touched and add nothing to the resident
// memory. The Server keeps it until it is garbage itself. Unlike GOGC, it
// does not multiply a big heap; GOGC and GOMEMLIMIT still apply on top.
func newHeapFloor() []byte { return make([]byte, heapFloorSize) }
