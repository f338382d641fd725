//go:build !unix

package regfile

import "os"

// Links returns 1: this system does not report hard links.
func Links(os.FileInfo) uint64 { return 1 }
