/* Closest-name suggestions (optimal string alignment distance). */
#include <ctype.h>
#include <string.h>
#include "mcorefs/suggest.h"

enum { MAX_LEN = 64 };

static char norm(char c)
{
    return c == '-' ? '_' : (char)tolower((unsigned char)c);
}

static int min3(int a, int b, int c)
{
    int m = a < b ? a : b;
    return m < c ? m : c;
}

/* Edits (insert, delete, substitute, swap neighbours) from a to b; MAX_LEN+1 when too long. */
static int distance(const char *a, const char *b)
{
    int la = (int)strlen(a), lb = (int)strlen(b);
    static _Thread_local int d[MAX_LEN + 1][MAX_LEN + 1];
    if (la > MAX_LEN || lb > MAX_LEN)
        return MAX_LEN + 1;
    for (int i = 0; i <= la; i++)
        d[i][0] = i;
    for (int j = 0; j <= lb; j++)
        d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int same = norm(a[i - 1]) == norm(b[j - 1]);
            d[i][j] = min3(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + !same);
            if (i > 1 && j > 1 && norm(a[i - 1]) == norm(b[j - 2]) && norm(a[i - 2]) == norm(b[j - 1]))
                d[i][j] = d[i][j] < d[i - 2][j - 2] + 1 ? d[i][j] : d[i - 2][j - 2] + 1;
        }
    return d[la][lb];
}

const char *mf_suggest(const char *word, const char *const *candidates)
{
    const char *best = NULL;
    int best_d = MAX_LEN + 1;
    for (const char *const *c = candidates; *c; c++) {
        int limit = (int)strlen(*c) / 3;
        int dist = distance(word, *c);
        if (dist <= (limit > 1 ? limit : 1) && dist < best_d) {
            best = *c;
            best_d = dist;
        }
    }
    return best;
}
