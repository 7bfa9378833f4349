"""One module per stage (`ganseg <stage>`, a DVC stage or a bench); stages import no other stage."""
