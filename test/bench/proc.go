package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// threadsCPU returns the CPU time a process's threads have run, summed over
// the threads alive now, from the kernel's per-thread accounting: the first
// field of /proc/PID/task/TID/schedstat, "time spent on the cpu" in
// nanoseconds (Linux Documentation/scheduler/sched-stats.rst), user and
// system time together. It has nanosecond resolution where cpuTime has
// clock ticks (10 ms). A thread that ends between two readings takes its
// time with it; Go's runtime rarely ends threads, and the benchmark
// cross-checks the sum against cpuTime over every row.
func threadsCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // the thread ended meanwhile
		}
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			return 0, fmt.Errorf("unexpected %s/%s/schedstat", dir, t.Name())
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected %s/%s/schedstat: %w", dir, t.Name(), err)
		}
		sum += ns
	}
	return time.Duration(sum), nil
}

// cpuTime returns the user plus system CPU time a process has used, all
// its threads together (also those that have ended), from /proc/PID/stat
// fields 14 and 15, utime and stime, which proc(5) gives "in clock ticks
// (divide by sysconf(_SC_CLK_TCK))".
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Field 2, comm, is in parentheses and may contain spaces: count
	// fields after the last ')', where field 3 (state) has index 0.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * time.Second / time.Duration(clockTicks()), nil
}

var ticks int64

// clockTicks is sysconf(_SC_CLK_TCK) as getconf reports it; Linux fixes
// USER_HZ at 100 for user space, the fallback.
func clockTicks() int64 {
	if ticks == 0 {
		ticks = 100
		if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
				ticks = n
			}
		}
	}
	return ticks
}

// memory returns a process's resident set now (VmRSS) and its peak
// (VmHWM, the "high water mark"), from /proc/PID/status (proc(5)).
func memory(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fields := strings.Fields(v) // "12345 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, fmt.Errorf("unexpected %s line in /proc/%d/status", k, pid)
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm, sc.Err()
}

// rssSplit returns the anonymous and file-backed parts of a process's
// resident set (RssAnon and RssFile in /proc/PID/status, proc(5)).
func rssSplit(pid int) (anon, file int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "RssAnon" && k != "RssFile") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if k == "RssAnon" {
			anon = n << 10
		} else {
			file = n << 10
		}
	}
	if anon == 0 || file == 0 {
		return 0, 0, fmt.Errorf("no RssAnon/RssFile in /proc/%d/status", pid)
	}
	return anon, file, nil
}

// cpuStat returns how long CPU n has been idle (idle and iowait) and in
// all, from its line in /proc/stat (proc(5): "cpuN user nice system idle
// iowait irq softirq steal ...", in clock ticks).
func cpuStat(n int) (idle, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	return parseCPUStat(string(b), n)
}

func parseCPUStat(text string, n int) (idle, total time.Duration, err error) {
	name := fmt.Sprintf("cpu%d", n)
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != name {
			continue
		}
		var sum int64
		for i, v := range f[1:] {
			x, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("unexpected %s line in /proc/stat", name)
			}
			if i < 8 { // guest time is already counted in user time
				sum += x
			}
			if i == 3 || i == 4 {
				idle += time.Duration(x)
			}
		}
		tick := time.Second / time.Duration(clockTicks())
		return idle * tick, time.Duration(sum) * tick, nil
	}
	return 0, 0, fmt.Errorf("no %s line in /proc/stat", name)
}

// pin sets the CPU affinity of every thread of a process (taskset -a) to
// the CPU list, e.g. "0" or "1-3". Threads created later inherit it.
func pin(pid int, cpus string) error {
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset -a -p -c %s %d: %v: %s", cpus, pid, err, bytes.TrimSpace(out))
	}
	return nil
}

// allCPUs is the CPU list of every online CPU, "0-N".
func allCPUs() string {
	if n := runtime.NumCPU(); n > 1 {
		return fmt.Sprintf("0-%d", n-1)
	}
	return "0"
}

// machine describes the computer: CPU model and count, whether it has
// AVX-512 IFMA (OpenSSL's RSA uses it on x86-64, and most of its lead over
// crypto/rsa comes from it), Go version, OS.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		model, _ = cpuInfo(string(b))
	}
	ifma := ""
	if runtime.GOARCH == "amd64" {
		ifma = ", without AVX-512 IFMA"
		if hasIFMA() {
			ifma = ", with AVX-512 IFMA"
		}
	}
	return fmt.Sprintf("%s%s, %d cores, %s %s/%s", model, ifma, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// hasIFMA reports whether this x86-64 CPU has AVX-512 IFMA.
func hasIFMA() bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || runtime.GOARCH != "amd64" {
		return false
	}
	_, flags := cpuInfo(string(b))
	return slices.Contains(strings.Fields(flags), "avx512ifma")
}

// cpuInfo returns the first processor's model name and flags from
// /proc/cpuinfo's text.
func cpuInfo(text string) (model, flags string) {
	model = "unknown CPU"
	for line := range strings.SplitSeq(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if model == "unknown CPU" {
				model = strings.TrimSpace(v)
			}
		case "flags":
			if flags == "" {
				flags = strings.TrimSpace(v)
			}
		}
	}
	return model, flags
}
