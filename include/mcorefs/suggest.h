/* "did you mean ...?" for mistyped option and command names. */
#ifndef MCOREFS_SUGGEST_H
#define MCOREFS_SUGGEST_H

/* The candidate (NULL-terminated list) closest to word, or NULL when none is close: '-' and '_'
 * count as the same and case is ignored; a candidate within a third of its length in edits
 * (at least 1; a swap of neighbours is one edit) is close. */
const char *mf_suggest(const char *word, const char *const *candidates);

#endif
