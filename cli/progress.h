/*
 * Progress reporting for long CLI commands (save, migrate, restore): pure
 * formatting functions, so they can be unit-tested, plus a one-line bar drawn on
 * a terminal.
 *
 * Units: byte counts in IEC units ("1.5 GiB"), rates in SI megabytes per second
 * ("850.3 MB/s", as dd and rsync print them).
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* "0 B", "1023 B", "1.0 KiB", "12.3 MiB", "1.5 GiB", "2.0 TiB", "1024.0 PiB" max unit
 * PiB. Returns a newly allocated string. */
char *progress_format_bytes(uint64_t bytes);

/* A rate in bytes per second: "0 B/s", "512 B/s", "12.5 kB/s", "850.3 MB/s",
 * "1.25 GB/s" (SI units). A negative or non-finite rate gives "-". */
char *progress_format_rate(double bytes_per_sec);

/* A duration in seconds as "0:42", "12:05", "1:02:03"; "--:--" when unknown
 * (negative or not finite) or longer than 99 hours. */
char *progress_format_eta(double seconds);

/* A duration in seconds for summaries: "850 ms", "1.23 s", "2 min 05 s", "1 h 02 min". */
char *progress_format_duration(double seconds);

/* Seconds left to move `remaining` bytes at `bytes_per_sec`; -1 when unknown. */
double progress_eta_seconds(uint64_t remaining, double bytes_per_sec);

typedef struct ProgressLine {
    const char *label; /* e.g. "active"; may be NULL */
    uint64_t done;     /* bytes processed */
    uint64_t total;    /* bytes in all; 0 when unknown (no bar, no percent) */
    double rate;       /* bytes per second; <= 0 when unknown */
    double eta;        /* seconds; < 0 when unknown */
} ProgressLine;

/*
 * Renders one line of at most `width` columns (no newline, no escape codes):
 *   "active [#######.......]  45%  1.2 GiB / 2.0 GiB  850.3 MB/s  ETA 0:03"
 * The bar shrinks (and disappears) to fit narrow terminals. Returns a newly
 * allocated string.
 */
char *progress_render(const ProgressLine *p, unsigned width);

/* Terminal width of `f` (TIOCGWINSZ), or `fallback` when it is not a terminal. */
unsigned progress_term_width(FILE *f, unsigned fallback);

/* Redraws the line in place on a terminal (carriage return, text, clear to the end
 * of the line). */
void progress_draw(FILE *f, const ProgressLine *p);

/* Erases the line drawn by progress_draw(). */
void progress_clear(FILE *f);
