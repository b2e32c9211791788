/*
 * Structured logging: one line per event on stderr,
 *   ts=... level=info proc=worker module=engine msg="task done" job_id=j1
 * or the same fields as members of one JSON object per line. The level is checked before
 * any formatting. Callers put context in key=value fields after the message
 * and never pass secrets or prompt text. Thread-safe (one write(2) per line).
 *
 * Fields are found in the format string: " key=" (lower case, digits, '_')
 * starts a field whose value is what the format expands to up to the next
 * " key=". Values are quoted and escaped by the logger whenever logfmt needs
 * it, so "job_id=%s error=%s" is safe whatever the strings hold (quotes,
 * spaces, "=", newlines, bytes that are not UTF-8); text from arguments never
 * makes a field of its own. key=\"%s\" in a format means the same as key=%s.
 * The keys ts, level, proc, module and msg are the logger's own.
 */
#ifndef SHOAL_COMMON_LOG_H
#define SHOAL_COMMON_LOG_H

typedef enum {
    SHOAL_LOG_DEBUG = 0,
    SHOAL_LOG_INFO,
    SHOAL_LOG_WARN,
    SHOAL_LOG_ERROR,
    SHOAL_LOG_OFF,
} shoal_log_level_t;

/* proc is borrowed for the life of the process (use a literal). */
void shoal_log_init(const char *proc, shoal_log_level_t level, int json);

/* Parses "debug", "info", "warn", "error", "off"; returns -1 if unknown. */
int shoal_log_level_parse(const char *s);

extern shoal_log_level_t shoal_log_min_level;

/* fmt: a message, optionally followed by " key=value ..." fields (see above). */
void shoal_log_write(shoal_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SHOAL_LOG_AT(lvl, module, ...)                                                             \
    do {                                                                                           \
        if ((lvl) >= shoal_log_min_level)                                                          \
            shoal_log_write((lvl), (module), __VA_ARGS__);                                         \
    } while (0)

#define shoal_log_debug(module, ...) SHOAL_LOG_AT(SHOAL_LOG_DEBUG, module, __VA_ARGS__)
#define shoal_log_info(module, ...) SHOAL_LOG_AT(SHOAL_LOG_INFO, module, __VA_ARGS__)
#define shoal_log_warn(module, ...) SHOAL_LOG_AT(SHOAL_LOG_WARN, module, __VA_ARGS__)
#define shoal_log_error(module, ...) SHOAL_LOG_AT(SHOAL_LOG_ERROR, module, __VA_ARGS__)

#endif
