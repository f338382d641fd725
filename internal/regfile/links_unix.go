//go:build unix

package regfile

import (
	"os"
	"syscall"
)

// Links returns the number of hard links of the file fi describes (1 where
// the system does not say).
func Links(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
